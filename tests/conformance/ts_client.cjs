// A client written with the official TypeScript SDK (@modelcontextprotocol/sdk, pinned in package.json), for
// tests: connect over Streamable HTTP (the SDK opens the standalone GET stream after initialize), list the tools,
// call one, answer sampling, elicitation and roots requests with canned answers, and print one JSON line per
// event so that a Python test can assert on what arrived:
//
//   {"event": "connected", "protocolVersion": ..., "sessionId": ...}
//   {"event": "tools", "names": [...]}
//   {"event": "request", "method": "sampling/createMessage", "params": {...}, "answer": {...}}  (answered)
//   {"event": "notification", "method": "notifications/message", "params": {...}}
//   {"event": "result", "result": {...}}  or  {"event": "error", "code": ..., "message": ...}
//   {"event": "timeout", "seconds": ..., "missing": [...]}  then exit code 2
//
// Options: --url URL, --tool NAME, --args JSON, --root URI (the one root it lists), --progress (ask for progress:
// the call carries a token),
// --roots-changed (send notifications/roots/list_changed after connecting), --expect METHOD (repeatable: after the
// call, wait until a notification with this method arrived or a request with it was answered), --linger SECONDS
// (then stay connected this long, answering what else comes: behind a gateway several servers may ask), --timeout
// SECONDS (the whole run, default 10: the process exits by itself, with code 2, when it is up; lingering is not
// counted).
// Run: NODE_PATH=.cache/npm/node_modules node tests/conformance/ts_client.cjs ... (tests/conformance/tools.py).
'use strict';

const { parseArgs } = require('node:util');
const { Client } = require('@modelcontextprotocol/sdk/client/index.js');
const { StreamableHTTPClientTransport } = require('@modelcontextprotocol/sdk/client/streamableHttp.js');
const t = require('@modelcontextprotocol/sdk/types.js');

const SAMPLING = {
  role: 'assistant',
  content: { type: 'text', text: 'canned sampling answer' },
  model: 'canned-model',
  stopReason: 'endTurn',
};
const ELICITATION = { action: 'accept', content: { response: 'canned elicitation answer' } };

const { values: opts } = parseArgs({
  options: {
    url: { type: 'string' },
    tool: { type: 'string' },
    args: { type: 'string', default: '{}' },
    progress: { type: 'boolean', default: false },
    'roots-changed': { type: 'boolean', default: false },
    expect: { type: 'string', multiple: true, default: [] },
    linger: { type: 'string', default: '0' },
    timeout: { type: 'string', default: '10' },
    root: { type: 'string', default: 'file:///canned/root' },
  },
});
const ROOTS = { roots: [{ uri: opts.root, name: 'canned' }] };
const timeoutSeconds = Number(opts.timeout);
const emit = (event) => process.stdout.write(`${JSON.stringify(event)}\n`);

// Methods still awaited (--expect), and who to wake when the last one arrives.
const missing = new Set(opts.expect);
let allSeen = () => {};
const seen = (method) => {
  missing.delete(method);
  if (missing.size === 0) allSeen();
};

const bound = setTimeout(() => {
  emit({ event: 'timeout', seconds: timeoutSeconds, missing: [...missing] });
  process.exit(2);
}, timeoutSeconds * 1000);

async function main() {
  if (!opts.url) throw new Error('--url is required');
  const client = new Client(
    { name: 'muster-ts-client-harness', version: '1.0.0' },
    { capabilities: { sampling: {}, elicitation: { form: {} }, roots: { listChanged: true } } },
  );
  // A request counts as answered (for --expect) once the transport has delivered the answer: the server accepted
  // its POST. The run does not end before every answer is delivered.
  const answering = new Map(); // request id -> method
  const delivering = new Set();
  const answer = (schema, method, canned) =>
    client.setRequestHandler(schema, async (request, extra) => {
      emit({ event: 'request', method, params: request.params, answer: canned });
      answering.set(extra.requestId, method);
      return canned;
    });
  answer(t.CreateMessageRequestSchema, 'sampling/createMessage', SAMPLING);
  answer(t.ElicitRequestSchema, 'elicitation/create', ELICITATION);
  answer(t.ListRootsRequestSchema, 'roots/list', ROOTS);
  client.fallbackNotificationHandler = async (notification) => {
    emit({ event: 'notification', method: notification.method, params: notification.params });
    seen(notification.method);
  };
  client.setNotificationHandler(t.LoggingMessageNotificationSchema, async (notification) => {
    emit({ event: 'notification', method: notification.method, params: notification.params });
    seen(notification.method);
  });
  client.onerror = (error) => emit({ event: 'transport-error', message: String(error?.message ?? error) });

  const transport = new StreamableHTTPClientTransport(new URL(opts.url));
  const send = transport.send.bind(transport);
  transport.send = (message, options) => {
    const method = 'result' in message ? answering.get(message.id) : undefined;
    const sent = send(message, options);
    if (method === undefined) return sent;
    answering.delete(message.id);
    const delivered = sent.then(() => seen(method));
    delivering.add(delivered);
    return delivered;
  };
  const requestOptions = { timeout: timeoutSeconds * 1000 };
  await client.connect(transport, requestOptions);
  emit({ event: 'connected', protocolVersion: transport.protocolVersion, sessionId: transport.sessionId });
  const { tools } = await client.listTools(undefined, requestOptions);
  emit({ event: 'tools', names: tools.map((tool) => tool.name) });
  if (opts['roots-changed']) await client.sendRootsListChanged();

  let code = 0;
  if (opts.tool) {
    const callOptions = { ...requestOptions };
    if (opts.progress) {
      callOptions.onprogress = (params) => {
        emit({ event: 'notification', method: 'notifications/progress', params });
        seen('notifications/progress');
      };
    }
    try {
      const result = await client.callTool({ name: opts.tool, arguments: JSON.parse(opts.args) }, undefined, callOptions);
      emit({ event: 'result', result });
    } catch (error) {
      emit({ event: 'error', code: error?.code, message: String(error?.message ?? error) });
      code = 1;
    }
  }
  if (missing.size > 0) await new Promise((resolve) => (allSeen = resolve));
  clearTimeout(bound);
  await new Promise((resolve) => setTimeout(resolve, Number(opts.linger) * 1000));
  await Promise.allSettled(delivering);
  await client.close();
  emit({ event: 'done' });
  process.exit(code);
}

main().catch((error) => {
  emit({ event: 'error', code: error?.code, message: String(error?.message ?? error) });
  process.exit(1);
});
