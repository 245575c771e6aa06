// Dex's part in the tests: oidc-provider (a certified OpenID provider) on 127.0.0.1, configured the way muster
// meets Dex: static clients with secrets, PKCE, rotating refresh tokens (a reused one revokes the grant), revocation,
// a real JWKS, ID tokens with email and groups, short lifetimes, a login page a test drives with plain HTTP, and the
// RFC 8693 token exchange Dex offers (subject: an ID token of a trusted issuer; result: an ID token for an audience).
//
// Configured by environment (tests/oidc/__init__.py sets it):
//   OIDC_PORT, OIDC_CLIENTS (JSON list of client metadata), OIDC_ACCESS_TTL, OIDC_ID_TTL, OIDC_REFRESH_TTL (seconds),
//   OIDC_EXCHANGE_TRUST (issuer whose ID tokens may be exchanged; default this one), OIDC_CONNECTOR (connector_id
//   the exchange expects), OIDC_RESOURCES (JSON {resource URL: scope}: JWT access tokens for these audiences),
//   OIDC_GROUPS (JSON {login: [groups]}).
// GET /_test/stats counts what happened (grants by type, refreshes, exchanges, revocations).
import http from 'node:http';
import { URLSearchParams } from 'node:url';

import * as jose from 'jose';
import Provider, { errors } from 'oidc-provider';

const env = process.env;
const port = Number(env.OIDC_PORT);
const issuer = `http://127.0.0.1:${port}`;
const ttl = (name, fallback) => Number(env[name] || fallback);
const accessTtl = ttl('OIDC_ACCESS_TTL', 300);
const idTtl = ttl('OIDC_ID_TTL', 300);
const refreshTtl = ttl('OIDC_REFRESH_TTL', 86400);
const resources = JSON.parse(env.OIDC_RESOURCES || '{}');
const groups = JSON.parse(env.OIDC_GROUPS || '{}');
const exchangeTrust = env.OIDC_EXCHANGE_TRUST || issuer;
const connector = env.OIDC_CONNECTOR || 'local';
const EXCHANGE = 'urn:ietf:params:oauth:grant-type:token-exchange';
const ID_TOKEN_TYPE = 'urn:ietf:params:oauth:token-type:id_token';

const stats = { grants: {}, refreshes: 0, refreshErrors: 0, exchanges: 0, revocations: 0, grantsRevoked: 0, logins: 0 };
const count = (type) => { stats.grants[type] = (stats.grants[type] || 0) + 1; };

const { privateKey } = await jose.generateKeyPair('RS256', { extractable: true });
const signingKey = { ...(await jose.exportJWK(privateKey)), kid: 'standin-1', alg: 'RS256', use: 'sig' };

function account(login) {
  return {
    accountId: login,
    async claims() {
      return {
        sub: login,
        email: `${login}@example.com`,
        email_verified: true,
        name: login,
        preferred_username: login,
        groups: groups[login] || ['developers'],
      };
    },
  };
}

const provider = new Provider(issuer, {
  clients: JSON.parse(env.OIDC_CLIENTS || '[]'),
  jwks: { keys: [signingKey] },
  findAccount: (_ctx, id) => account(id),
  claims: {
    openid: ['sub'],
    email: ['email', 'email_verified'],
    profile: ['name', 'preferred_username'],
    groups: ['groups'],
  },
  scopes: ['openid', 'offline_access', 'email', 'profile', 'groups'],
  conformIdTokenClaims: false, // Dex puts email and groups in the ID token
  cookies: { keys: ['standin-cookie-key'] },
  pkce: { required: () => true },
  features: {
    devInteractions: { enabled: false },
    revocation: { enabled: true },
    introspection: { enabled: true },
    resourceIndicators: {
      enabled: true,
      defaultResource: (_ctx, _client, oneOf) => oneOf,
      useGrantedResource: () => true,
      getResourceServerInfo: (_ctx, resource) => {
        if (!(resource in resources)) throw new errors.InvalidTarget();
        return { scope: resources[resource], audience: resource, accessTokenFormat: 'jwt', accessTokenTTL: accessTtl };
      },
    },
  },
  // JWT access tokens (for a resource server) carry who the user is, as a real authorization server's would
  extraTokenClaims: async (_ctx, token) => (token.accountId
    ? { email: `${token.accountId}@example.com`, groups: groups[token.accountId] || ['developers'] }
    : undefined),
  issueRefreshToken: async (_ctx, client) => client.grantTypeAllowed('refresh_token'),
  rotateRefreshToken: () => true,
  ttl: {
    AccessToken: accessTtl,
    IdToken: idTtl,
    RefreshToken: refreshTtl,
    AuthorizationCode: 60,
    Interaction: 600,
    Session: 3600,
    Grant: refreshTtl,
  },
  interactions: { url: (_ctx, interaction) => `/interaction/${interaction.uid}` },
  renderError: async (ctx, out) => { ctx.type = 'json'; ctx.body = out; },
});

provider.on('grant.success', (ctx) => {
  const type = ctx.oidc.params.grant_type;
  count(type);
  if (type === 'refresh_token') stats.refreshes += 1;
});
provider.on('grant.error', (ctx) => { if (ctx.oidc.params?.grant_type === 'refresh_token') stats.refreshErrors += 1; });
// a revocation request that found its token (RFC 7009 answers 200 either way); reuse detection also revokes grants
provider.on('grant.revoked', () => { stats.grantsRevoked += 1; });
provider.use(async (ctx, next) => {
  await next();
  if (ctx.path === '/token/revocation' && ctx.status === 200 && ctx.oidc?.entities?.RefreshToken) stats.revocations += 1;
});

// RFC 8693 as Dex serves it: the subject is an ID token of the trusted (upstream) issuer, checked against its
// JWKS; connector_id names the connector that trusts it; the result is an ID token of this issuer for `audience`.
const trustedKeys = jose.createRemoteJWKSet(new URL(`${exchangeTrust}/jwks`));
provider.registerGrantType(EXCHANGE, async (ctx) => {
  const p = ctx.oidc.params;
  const fail = (error, description) => {
    ctx.status = 400;
    ctx.body = { error, error_description: description };
  };
  if (!p.subject_token || !p.subject_token_type) return fail('invalid_request', 'subject_token and its type needed');
  if (p.connector_id !== connector) return fail('invalid_request', 'unknown connector_id');
  if (p.requested_token_type && p.requested_token_type !== ID_TOKEN_TYPE) {
    return fail('invalid_request', 'only id tokens are issued');
  }
  let subject;
  try {
    subject = (await jose.jwtVerify(p.subject_token, trustedKeys, { issuer: exchangeTrust })).payload;
  } catch {
    return fail('invalid_grant', 'subject token rejected');
  }
  const now = Math.floor(Date.now() / 1000);
  const claims = { sub: subject.sub, email: subject.email, email_verified: true, groups: subject.groups, name: subject.name };
  const token = await new jose.SignJWT(claims)
    .setProtectedHeader({ alg: 'RS256', kid: signingKey.kid, typ: 'JWT' })
    .setIssuer(issuer)
    .setAudience(p.audience || ctx.oidc.client.clientId)
    .setIssuedAt(now)
    .setExpirationTime(now + idTtl)
    .sign(privateKey);
  stats.exchanges += 1;
  ctx.body = { access_token: token, issued_token_type: ID_TOKEN_TYPE, token_type: 'N_A', expires_in: idTtl };
}, ['subject_token', 'subject_token_type', 'requested_token_type', 'audience', 'connector_id', 'scope']);

// The login page: GET shows a form, POST login=<name> signs that user in and grants what the client asked for.
async function interaction(req, res, uid) {
  const details = await provider.interactionDetails(req, res);
  if (req.method === 'GET') {
    res.writeHead(200, { 'content-type': 'text/html' });
    res.end(`<form method="post" action="/interaction/${uid}"><input name="login"><button>Sign in</button></form>`);
    return;
  }
  const chunks = [];
  for await (const chunk of req) chunks.push(chunk);
  const login = new URLSearchParams(Buffer.concat(chunks).toString()).get('login');
  if (!login) {
    res.writeHead(400, { 'content-type': 'text/plain' });
    res.end('login needed');
    return;
  }
  const { params } = details;
  const grant = new provider.Grant({ accountId: login, clientId: params.client_id });
  if (params.scope) grant.addOIDCScope(params.scope);
  if (params.resource) grant.addResourceScope(params.resource, resources[params.resource] || '');
  const grantId = await grant.save();
  stats.logins += 1;
  await provider.interactionFinished(req, res, { login: { accountId: login }, consent: { grantId } });
}

const callback = provider.callback();
http.createServer((req, res) => {
  const path = req.url.split('?')[0];
  const match = path.match(/^\/interaction\/([^/]+)$/);
  if (match) {
    interaction(req, res, match[1]).catch((err) => {
      res.writeHead(400, { 'content-type': 'text/plain' });
      res.end(String(err.message));
    });
  } else if (path === '/_test/stats') {
    res.writeHead(200, { 'content-type': 'application/json' });
    res.end(JSON.stringify(stats));
  } else {
    callback(req, res);
  }
}).listen(port, '127.0.0.1', () => console.error(`oidc-provider stand-in at ${issuer}`));
