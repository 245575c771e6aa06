// The conformance fixtures (reference/conformance-server-scenarios.md) as a server written with the official
// TypeScript SDK (@modelcontextprotocol/sdk, pinned in package.json), Streamable HTTP with stateful sessions.
//
// It sends server->client traffic the way TypeScript SDK servers do: a handler that calls `server.request(...)`
// (createMessage, elicitInput, listRoots) or `server.notification(...)` (sendLoggingMessage) without relating
// it to the call puts it on the session's standalone GET stream, not on the call's POST stream. The conformance
// tools test_sampling and test_elicitation* do that, as the conformance repository's TypeScript server does; the
// unrelated_* tools do it for every kind of message, and a notifications/roots/list_changed from the client is
// answered with a roots/list request on the GET stream. test_tool_with_logging and test_tool_with_progress use
// the call's own stream (extra.sendNotification), as that server does too. Before an unrelated send the server
// waits up to 5 s for the session's GET stream, so that a client (or gateway) that opens it a little late is not
// raced; then it sends either way, and what has no stream to go to is dropped, as the SDK does.
//
// Run: NODE_PATH=.cache/npm/node_modules node tests/conformance/ts_server.cjs --port PORT (tests/conformance/tools.py
// builds the command). GET /_fixture/stats counts what the tests need to see.
'use strict';

const http = require('node:http');
const path = require('node:path');
const { randomUUID } = require('node:crypto');
const { parseArgs } = require('node:util');
const { Server } = require('@modelcontextprotocol/sdk/server/index.js');
const { StreamableHTTPServerTransport } = require('@modelcontextprotocol/sdk/server/streamableHttp.js');
const t = require('@modelcontextprotocol/sdk/types.js');

// The fixtures both fixture servers serve (this one and tests/fixtures/conformance_server.py), texts exact.
const F = require(path.join(__dirname, '..', 'fixtures', 'conformance_fixtures.json'));
const TOOLS = [...F.tools, ...F.unrelated_tools];
// How long an unrelated send waits for the client's GET stream: a client opens it just after initialize, in
// parallel with its first call, and what is sent before it is there is dropped (the SDK keeps no backlog).
const STREAM_WAIT_MS = 5000;

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));
const text = (value, isError = false) => ({ content: [{ type: 'text', text: value }], ...(isError ? { isError } : {}) });
const errorText = (error) => (error instanceof Error ? error.message : String(error));

// What the tests read back through GET /_fixture/stats.
const stats = { counters: {}, rootsChanged: [] };
const count = (key) => {
  stats.counters[key] = (stats.counters[key] ?? 0) + 1;
};

// Resumability (SEP-1699): every event kept in order per stream, so a reconnecting client gets what it missed.
class MemoryEvents {
  constructor() {
    this.events = []; // { id, streamId, message }
  }
  async storeEvent(streamId, message) {
    const id = `${streamId}::${String(this.events.length).padStart(8, '0')}`;
    this.events.push({ id, streamId, message });
    return id;
  }
  async getStreamIdForEventId(eventId) {
    return this.events.find((e) => e.id === eventId)?.streamId;
  }
  async replayEventsAfter(lastEventId, { send }) {
    const streamId = await this.getStreamIdForEventId(lastEventId);
    if (streamId === undefined) throw new Error(`unknown event id ${lastEventId}`);
    for (const event of this.events) {
      // an empty message is a priming event: it carries an id and a retry time, nothing to replay
      if (event.streamId === streamId && event.id > lastEventId && Object.keys(event.message).length > 0) {
        await send(event.id, event.message);
      }
    }
    return streamId;
  }
}

// One MCP session: the SDK's transport and server, and whether the client holds the session's GET stream.
class Session {
  constructor() {
    this.getStreams = 0;
    this.transport = new StreamableHTTPServerTransport({
      sessionIdGenerator: () => randomUUID(),
      eventStore: new MemoryEvents(),
      retryInterval: 500,
      onsessioninitialized: (id) => sessions.set(id, this),
    });
    this.transport.onclose = () => sessions.delete(this.transport.sessionId);
    this.server = createServer(this);
  }

  // Resolves once the client holds the GET stream, or after STREAM_WAIT_MS: the send goes ahead either way.
  async standaloneStream() {
    for (let waited = 0; this.getStreams === 0 && waited < STREAM_WAIT_MS; waited += 20) await sleep(20);
  }

  // A server->client request on the standalone stream, as `server.createMessage(...)` etc. send it.
  async unrelated(method, timeoutSeconds, send) {
    await this.standaloneStream();
    count(`unrelated sent ${method}`);
    try {
      const result = await send({ timeout: (timeoutSeconds ?? 60) * 1000 });
      count(`unrelated answered ${method}`);
      return result;
    } catch (error) {
      count(`unrelated failed ${method}`);
      throw error;
    }
  }
}

const sessions = new Map();

function createServer(session) {
  const server = new Server(
    { name: 'mcp-conformance-test-server-ts', version: '1.0.0' },
    {
      capabilities: {
        tools: { listChanged: true },
        resources: { subscribe: true, listChanged: true },
        prompts: { listChanged: true },
        logging: {},
        completions: {},
      },
    },
  );
  const subscriptions = new Set();

  server.setRequestHandler(t.ListToolsRequestSchema, async () => ({ tools: TOOLS }));
  server.setRequestHandler(t.CallToolRequestSchema, async (request, extra) => {
    count(`call ${request.params.name}`);
    return callTool(server, session, request.params.name, request.params.arguments ?? {}, extra);
  });

  server.setRequestHandler(t.ListResourcesRequestSchema, async () => ({ resources: F.resources }));
  server.setRequestHandler(t.ListResourceTemplatesRequestSchema, async () => ({ resourceTemplates: F.templates }));
  server.setRequestHandler(t.ReadResourceRequestSchema, async (request) => {
    const uri = request.params.uri;
    if (uri === 'test://static-text') {
      return { contents: [{ uri, mimeType: 'text/plain', text: 'This is the content of the static text resource.' }] };
    }
    if (uri === 'test://static-binary') return { contents: [{ uri, mimeType: 'image/png', blob: F.image }] };
    if (uri === 'test://watched-resource') {
      return { contents: [{ uri, mimeType: 'text/plain', text: 'Watched resource content' }] };
    }
    const match = /^test:\/\/template\/(.+)\/data$/.exec(uri);
    if (match) {
      const data = JSON.stringify({ id: match[1], templateTest: true, data: `Data for ID: ${match[1]}` });
      return { contents: [{ uri, mimeType: 'application/json', text: data }] };
    }
    throw new t.McpError(-32002, 'Resource not found', { uri });
  });
  server.setRequestHandler(t.SubscribeRequestSchema, async (request) => {
    subscriptions.add(request.params.uri);
    count('subscribe');
    return {};
  });
  server.setRequestHandler(t.UnsubscribeRequestSchema, async (request) => {
    subscriptions.delete(request.params.uri);
    count('unsubscribe');
    return {};
  });

  server.setRequestHandler(t.ListPromptsRequestSchema, async () => ({ prompts: F.prompts }));
  server.setRequestHandler(t.GetPromptRequestSchema, async (request) => getPrompt(request.params));
  server.setRequestHandler(t.CompleteRequestSchema, async (request) => {
    const values = ['paris', 'park', 'party'].filter((v) => v.startsWith(request.params.argument.value));
    return { completion: { values, total: values.length, hasMore: false } };
  });

  // What a roots-aware server does when the client says its roots changed: ask for them, on the GET stream.
  server.setNotificationHandler(t.RootsListChangedNotificationSchema, async () => {
    count('roots/list_changed');
    try {
      const result = await session.unrelated('roots/list', undefined, (options) => server.listRoots(undefined, options));
      stats.rootsChanged.push({ roots: result.roots.map((r) => r.uri) });
    } catch (error) {
      stats.rootsChanged.push({ error: errorText(error) });
    }
  });
  return server;
}

async function callTool(server, session, name, args, extra) {
  switch (name) {
    case 'test_simple_text':
      return text('This is a simple text response for testing.');
    case 'test_image_content':
      return { content: [{ type: 'image', data: F.image, mimeType: 'image/png' }] };
    case 'test_audio_content':
      return { content: [{ type: 'audio', data: F.audio, mimeType: 'audio/wav' }] };
    case 'test_embedded_resource':
      return {
        content: [
          {
            type: 'resource',
            resource: { uri: 'test://embedded-resource', mimeType: 'text/plain', text: 'This is an embedded resource content.' },
          },
        ],
      };
    case 'test_multiple_content_types':
      return {
        content: [
          { type: 'text', text: 'Multiple content types test:' },
          { type: 'image', data: F.image, mimeType: 'image/png' },
          {
            type: 'resource',
            resource: {
              uri: 'test://mixed-content-resource',
              mimeType: 'application/json',
              text: JSON.stringify({ test: 'data', value: 123 }),
            },
          },
        ],
      };
    case 'test_tool_with_logging': {
      const steps = ['Tool execution started', 'Tool processing data', 'Tool execution completed'];
      for (const [n, data] of steps.entries()) {
        if (n) await sleep(50);
        await extra.sendNotification({ method: 'notifications/message', params: { level: 'info', data } });
      }
      return text('Tool with logging executed successfully');
    }
    case 'test_tool_with_progress': {
      const progressToken = extra._meta?.progressToken ?? 0;
      for (const [n, progress] of [0, 50, 100].entries()) {
        if (n) await sleep(50);
        await extra.sendNotification({
          method: 'notifications/progress',
          params: { progressToken, progress, total: 100, message: `Completed step ${progress} of 100` },
        });
      }
      return text(String(progressToken));
    }
    case 'test_error_handling':
      return text('This tool intentionally returns an error for testing', true);
    case 'test_sampling':
    case 'unrelated_sampling':
      try {
        const result = await session.unrelated('sampling/createMessage', args.timeout, (options) =>
          server.createMessage(
            { messages: [{ role: 'user', content: { type: 'text', text: args.prompt ?? 'Say hello' } }], maxTokens: 100 },
            options,
          ),
        );
        return text(`LLM response: ${result.content?.type === 'text' ? result.content.text : 'No response'}`);
      } catch (error) {
        return text(`Sampling not supported or error: ${errorText(error)}`);
      }
    case 'test_elicitation':
    case 'test_elicitation_sep1034_defaults':
    case 'test_elicitation_sep1330_enums':
    case 'unrelated_elicitation': {
      const [message, requestedSchema, prefix] =
        name === 'test_elicitation_sep1034_defaults'
          ? ['Please review and update the form fields with defaults', F.sep1034, 'Elicitation completed']
          : name === 'test_elicitation_sep1330_enums'
            ? ['Please select options from the enum fields', F.sep1330, 'Elicitation completed']
            : [args.message ?? 'Please answer', F.elicitation_form, 'User response'];
      try {
        const result = await session.unrelated('elicitation/create', args.timeout, (options) =>
          server.elicitInput({ mode: 'form', message, requestedSchema }, options),
        );
        return text(`${prefix}: action=${result.action}, content=${JSON.stringify(result.content ?? {})}`);
      } catch (error) {
        return text(`Elicitation not supported or error: ${errorText(error)}`);
      }
    }
    case 'json_schema_2020_12_tool':
      return text(`JSON Schema 2020-12 tool called with: ${JSON.stringify(args)}`);
    case 'test_reconnection':
      extra.closeSSEStream?.(); // SEP-1699: end the POST stream; the client polls for the rest
      await sleep(100);
      return text(
        'Reconnection test completed successfully. If you received this, the client properly reconnected after ' +
          'stream closure.',
      );
    case 'unrelated_roots':
      try {
        const result = await session.unrelated('roots/list', args.timeout, (options) => server.listRoots(undefined, options));
        return text(JSON.stringify(result.roots.map((r) => r.uri)));
      } catch (error) {
        return text(`Roots not supported or error: ${errorText(error)}`, true);
      }
    case 'unrelated_log':
      await session.standaloneStream();
      count('unrelated sent notifications/message');
      await server.sendLoggingMessage(
        { level: args.level ?? 'info', logger: 'ts-fixture', data: args.data ?? 'unrelated log' },
        extra.sessionId,
      );
      return text('sent a log message on the standalone stream');
    case 'unrelated_progress': {
      const progressToken = extra._meta?.progressToken;
      if (progressToken === undefined) return text('unrelated_progress needs a progress token', true);
      await session.standaloneStream();
      count('unrelated sent notifications/progress');
      await server.notification({
        method: 'notifications/progress',
        params: { progressToken, progress: 1, total: 1, message: 'progress on the standalone stream' },
      });
      await sleep(500); // progress names a call in flight: answer once it has had time to arrive on the other stream
      return text('sent progress on the standalone stream');
    }
    default:
      return text(`Unknown tool: ${name}`, true);
  }
}

function getPrompt({ name, arguments: args = {} }) {
  const user = (content) => ({ role: 'user', content });
  switch (name) {
    case 'test_simple_prompt':
      return { messages: [user({ type: 'text', text: 'This is a simple prompt for testing.' })] };
    case 'test_prompt_with_arguments':
      return { messages: [user({ type: 'text', text: `Prompt with arguments: arg1='${args.arg1}', arg2='${args.arg2}'` })] };
    case 'test_prompt_with_embedded_resource':
      return {
        messages: [
          user({
            type: 'resource',
            resource: { uri: args.resourceUri ?? '', mimeType: 'text/plain', text: 'Embedded resource content for testing.' },
          }),
          user({ type: 'text', text: 'Please process the embedded resource above.' }),
        ],
      };
    case 'test_prompt_with_image':
      return {
        messages: [
          user({ type: 'image', data: F.image, mimeType: 'image/png' }),
          user({ type: 'text', text: 'Please analyze the image above.' }),
        ],
      };
    default:
      throw new t.McpError(t.ErrorCode.InvalidParams, `Unknown prompt: ${name}`);
  }
}

// DNS rebinding protection: Host and Origin must name this machine.
const LOCAL = /^(localhost|127\.0\.0\.1|\[::1\])(:\d+)?$/;
function local(req) {
  if (!LOCAL.test(req.headers.host ?? '')) return false;
  const origin = req.headers.origin;
  if (origin === undefined) return true;
  try {
    return LOCAL.test(new URL(origin).host);
  } catch {
    return false;
  }
}

function json(res, status, body) {
  res.writeHead(status, { 'Content-Type': 'application/json' }).end(JSON.stringify(body));
}
const rpcError = (code, message) => ({ jsonrpc: '2.0', error: { code, message }, id: null });

async function readJson(req) {
  const chunks = [];
  for await (const chunk of req) chunks.push(chunk);
  return JSON.parse(Buffer.concat(chunks).toString('utf8'));
}

// Counts the session's open GET streams: the SDK answers a GET with 200 and an event stream when it holds it.
function watchGetStream(session, res) {
  const writeHead = res.writeHead;
  res.writeHead = function (status, ...rest) {
    if (status === 200 && !res.holdsStream) {
      res.holdsStream = true;
      session.getStreams += 1;
      res.once('close', () => {
        session.getStreams -= 1;
      });
    }
    return writeHead.call(this, status, ...rest);
  };
}

async function handleMcp(req, res) {
  if (!local(req)) return json(res, 403, rpcError(-32000, 'Forbidden: Host or Origin is not local'));
  const id = req.headers['mcp-session-id'];
  if (id !== undefined) {
    const session = sessions.get(id);
    if (session === undefined) return json(res, 404, rpcError(-32001, 'Session not found'));
    if (req.method === 'GET' && req.headers['last-event-id'] === undefined) watchGetStream(session, res);
    return session.transport.handleRequest(req, res);
  }
  if (req.method !== 'POST') return json(res, 400, rpcError(-32000, 'Bad Request: no session id'));
  let body;
  try {
    body = await readJson(req);
  } catch {
    return json(res, 400, rpcError(-32700, 'Parse error'));
  }
  if (!t.isInitializeRequest(body)) return json(res, 400, rpcError(-32000, 'Bad Request: no session id'));
  const session = new Session();
  await session.server.connect(session.transport);
  return session.transport.handleRequest(req, res, body);
}

function main() {
  const { values } = parseArgs({ options: { port: { type: 'string' } } });
  const port = Number(values.port);
  if (!Number.isInteger(port) || port <= 0) throw new Error('--port PORT is required');
  const httpServer = http.createServer((req, res) => {
    const path = new URL(req.url ?? '/', 'http://localhost').pathname;
    if (path === '/mcp') {
      handleMcp(req, res).catch((error) => {
        if (!res.headersSent) json(res, 500, rpcError(-32603, errorText(error)));
      });
    } else if (path === '/_fixture/stats' && req.method === 'GET') {
      const getStreams = [...sessions.values()].reduce((n, s) => n + s.getStreams, 0);
      json(res, 200, { stats: stats.counters, roots_changed: stats.rootsChanged, get_streams: getStreams });
    } else {
      json(res, 404, { error: 'not found' });
    }
  });
  httpServer.listen(port, '127.0.0.1');
  for (const signal of ['SIGTERM', 'SIGINT']) process.on(signal, () => process.exit(0));
}

main();
