// provider.mjs runs panva's oidc-provider (an OpenID Certified OP) on
// loopback as the upstream provider of bffgate's gateway in end-to-end tests.
//
// Usage: node provider.mjs '<config JSON>'
//
// Config (every field optional except clients):
//   {
//     "host": "127.0.0.1", "port": 0,
//     "accessTokenTTL": 10, "refreshTokenTTL": 3600, "idTokenTTL": 3600,
//     "sessionTTL": 86400,
//     "idTokenClaims": false,   // true: profile claims also in the ID token
//     "accountClaims": {"SUB": {"groups": ["ops"], "roles": ["approver"]}},
//                               // extra claims of an account (the groups and
//                               // roles scopes release groups and roles)
//     "clients": [{
//       "client_id": "...", "client_secret": "...",
//       "redirect_uris": ["..."], "post_logout_redirect_uris": ["..."],
//       "backchannel_logout_uri": "...",          // optional
//       "token_endpoint_auth_method": "client_secret_basic"
//     }]
//   }
//
// It listens first (port 0 picks a free port), then builds the provider with
// the issuer http://host:port, and prints one line on stdout:
//   {"ready":true,"issuer":"http://127.0.0.1:PORT","admin":"http://.../_admin"}
// or {"ready":false,"error":"..."} and exits 1. Logs go to stderr.
//
// Admin routes (loopback test hooks, not part of any OIDC spec):
//   GET  /_admin/stats             counters of grants, refresh-token reuse,
//                                  back-channel deliveries, live sessions
//   PUT  /_admin/clients           register or replace a client (JSON metadata)
//   POST /_admin/end-session       {"sub": "..."}: end every session of sub at
//                                  the provider, as its own end_session
//                                  endpoint does: back-channel logout to each
//                                  client with a backchannel_logout_uri, grants
//                                  revoked, sessions destroyed.
//                                  {"sub": "...", "client_id": "..."}: log sub
//                                  out of that one client only, as end_session
//                                  does for the client that asked when the user
//                                  does not sign out everywhere: back-channel
//                                  logout to it, its grant revoked, the session
//                                  kept for the other clients.
//
// Back-channel logout URIs on a name under .localhost (http://b.localhost:PORT/...)
// are delivered to 127.0.0.1 with that Host header, as browsers resolve those
// names (RFC 6761 §6.3): tests give several gateway frontends, selected by
// host name, one loopback port.
import { createServer, request as httpRequest } from 'node:http';
import { randomBytes } from 'node:crypto';

import Provider from 'oidc-provider';
import { exportJWK, generateKeyPair } from 'jose';

function fail(message) {
  process.stdout.write(`${JSON.stringify({ ready: false, error: message })}\n`);
  process.exit(1);
}

let cfg;
try {
  cfg = JSON.parse(process.argv[2] ?? '{}');
} catch (err) {
  fail(`provider.mjs: the first argument must be the config JSON: ${err.message}`);
}
if (!Array.isArray(cfg.clients) || cfg.clients.length === 0) {
  fail('provider.mjs: config.clients must list at least one client');
}

const host = cfg.host ?? '127.0.0.1';
const ttl = {
  access: cfg.accessTokenTTL ?? 10,
  refresh: cfg.refreshTokenTTL ?? 3600,
  idToken: cfg.idTokenTTL ?? 3600,
  session: cfg.sessionTTL ?? 86400,
};

// MemoryAdapter stores every model in Maps with expiry. oidc-provider ships
// an LRU memory adapter, but it is capped at 1000 entries (a load test with
// rotation evicts live tokens) and cannot list sessions by account, which
// the end-session admin hook needs; the adapter interface is small and
// documented (lib/adapters/memory_adapter.js), so it is written here.
const stores = new Map();
function storeFor(model) {
  let s = stores.get(model);
  if (!s) {
    s = new Map();
    stores.set(model, s);
  }
  return s;
}
const nowSec = () => Math.floor(Date.now() / 1000);

function live(entry) {
  return entry && (entry.expiresAt === undefined || entry.expiresAt > nowSec());
}

class MemoryAdapter {
  constructor(model) {
    this.model = model;
    this.store = storeFor(model);
  }

  async upsert(id, payload, expiresIn) {
    const expiresAt = typeof expiresIn === 'number' ? nowSec() + expiresIn : undefined;
    this.store.set(id, { payload: structuredClone(payload), expiresAt });
  }

  async find(id) {
    const e = this.store.get(id);
    if (!live(e)) {
      this.store.delete(id);
      return undefined;
    }
    return structuredClone(e.payload);
  }

  async findByUid(uid) {
    for (const [id, e] of this.store) {
      if (e.payload.uid === uid) return this.find(id);
    }
    return undefined;
  }

  async findByUserCode(userCode) {
    for (const [id, e] of this.store) {
      if (e.payload.userCode === userCode) return this.find(id);
    }
    return undefined;
  }

  async consume(id) {
    const e = this.store.get(id);
    if (e) e.payload.consumed = nowSec();
  }

  async destroy(id) {
    this.store.delete(id);
  }

  async revokeByGrantId(grantId) {
    for (const s of stores.values()) {
      for (const [id, e] of s) {
        if (e.payload.grantId === grantId) s.delete(id);
      }
    }
  }
}

// Expired entries are removed every few seconds so a long run stays small.
setInterval(() => {
  for (const s of stores.values()) {
    for (const [id, e] of s) {
      if (!live(e)) s.delete(id);
    }
  }
}, 5000).unref();

const stats = {
  grants: {},          // grant_type -> successful token responses
  grantErrors: {},     // error_description -> count
  refreshTokenReuse: 0, // "refresh token already used" (rotation reuse)
  backchannel: { success: 0, error: 0, errors: [] },
  endSession: 0,
};

function clientMetadata(c) {
  const m = {
    client_id: c.client_id,
    client_secret: c.client_secret,
    redirect_uris: c.redirect_uris ?? [],
    post_logout_redirect_uris: c.post_logout_redirect_uris ?? [],
    grant_types: ['authorization_code', 'refresh_token'],
    response_types: ['code'],
    token_endpoint_auth_method: c.token_endpoint_auth_method ?? 'client_secret_basic',
  };
  if (c.backchannel_logout_uri) {
    m.backchannel_logout_uri = c.backchannel_logout_uri;
    m.backchannel_logout_session_required = c.backchannel_logout_session_required ?? true;
  }
  return m;
}

let provider;
const server = createServer((req, res) => {
  if (!provider) {
    res.writeHead(503, { 'content-type': 'application/json' });
    res.end('{"error":"temporarily_unavailable","error_description":"the provider is starting"}');
    return;
  }
  if (req.url.startsWith('/_admin/')) {
    admin(req, res).catch((err) => sendJSON(res, 500, { error: 'server_error', error_description: String(err?.stack ?? err) }));
    return;
  }
  provider.callback()(req, res);
});

function sendJSON(res, status, body) {
  res.writeHead(status, { 'content-type': 'application/json', 'cache-control': 'no-store' });
  res.end(JSON.stringify(body));
}

async function readJSON(req) {
  const chunks = [];
  for await (const c of req) chunks.push(c);
  const text = Buffer.concat(chunks).toString('utf8');
  return text ? JSON.parse(text) : {};
}

async function admin(req, res) {
  const path = req.url.split('?')[0];
  if (req.method === 'GET' && path === '/_admin/stats') {
    let sessions = 0;
    for (const e of storeFor('Session').values()) if (live(e)) sessions += 1;
    let refreshTokens = 0;
    for (const e of storeFor('RefreshToken').values()) if (live(e) && !e.payload.consumed) refreshTokens += 1;
    sendJSON(res, 200, { ...stats, liveSessions: sessions, liveRefreshTokens: refreshTokens });
    return;
  }
  if (req.method === 'PUT' && path === '/_admin/clients') {
    let body;
    try {
      body = await readJSON(req);
    } catch (err) {
      sendJSON(res, 400, { error: 'invalid_request', error_description: `body must be client metadata JSON: ${err.message}` });
      return;
    }
    if (!body.client_id) {
      sendJSON(res, 400, { error: 'invalid_request', error_description: 'client_id is required' });
      return;
    }
    try {
      await provider.Client.validate(clientMetadata(body));
    } catch (err) {
      sendJSON(res, 400, { error: err.error ?? 'invalid_client_metadata', error_description: err.error_description ?? err.message });
      return;
    }
    await new MemoryAdapter('Client').upsert(body.client_id, clientMetadata(body));
    sendJSON(res, 200, { client_id: body.client_id });
    return;
  }
  if (req.method === 'POST' && path === '/_admin/end-session') {
    let body;
    try {
      body = await readJSON(req);
    } catch (err) {
      sendJSON(res, 400, { error: 'invalid_request', error_description: `body must be {"sub": "..."}: ${err.message}` });
      return;
    }
    if (typeof body.sub !== 'string' || body.sub === '') {
      sendJSON(res, 400, { error: 'invalid_request', error_description: 'sub is required' });
      return;
    }
    if (body.client_id !== undefined && (typeof body.client_id !== 'string' || body.client_id === '')) {
      sendJSON(res, 400, { error: 'invalid_request', error_description: 'client_id, when given, must be a client id' });
      return;
    }
    sendJSON(res, 200, await endSessions(body.sub, body.client_id));
    return;
  }
  sendJSON(res, 404, { error: 'not_found', error_description: `no admin route ${req.method} ${path}` });
}

// endSessions does for every session of sub what oidc-provider's end_session
// confirm step does with logout=yes (lib/actions/end_session.js): notify each
// client by back-channel logout, revoke its grant, destroy the session. With
// onlyClient it does what that step does without logout=yes for the client
// that asked: notify and revoke that client only, and keep the session for
// the others.
async function endSessions(sub, onlyClient) {
  const result = { sessions: 0, backchannel: [] };
  for (const [id, e] of [...storeFor('Session')]) {
    if (!live(e) || e.payload.accountId !== sub) continue;
    const authorizations = e.payload.authorizations ?? {};
    if (onlyClient !== undefined && !(onlyClient in authorizations)) continue;
    result.sessions += 1;
    for (const [clientId, auth] of Object.entries(authorizations)) {
      if (onlyClient !== undefined && clientId !== onlyClient) continue;
      const client = await provider.Client.find(clientId);
      if (client?.backchannelLogoutUri) {
        try {
          await client.backchannelLogout(sub, auth.sid);
          stats.backchannel.success += 1;
          result.backchannel.push({ client_id: clientId, ok: true });
        } catch (err) {
          stats.backchannel.error += 1;
          const msg = err.cause ? `${err.message}: ${err.cause.message ?? err.cause}` : err.message;
          stats.backchannel.errors.push(msg);
          result.backchannel.push({ client_id: clientId, ok: false, error: msg });
        }
      }
      if (auth.grantId) {
        await new MemoryAdapter('Grant').destroy(auth.grantId);
        await new MemoryAdapter('Grant').revokeByGrantId(auth.grantId);
      }
    }
    if (onlyClient === undefined) {
      storeFor('Session').delete(id);
    } else {
      delete e.payload.authorizations[onlyClient];
    }
  }
  return result;
}

// localhostFetch sends a request for http://NAME.localhost:PORT/... to
// 127.0.0.1:PORT with the Host header NAME.localhost:PORT (fetch cannot set
// Host, and the system resolver here knows no *.localhost names), and
// returns the answer as a fetch Response.
function localhostFetch(target, options) {
  const u = new URL(target);
  const headers = Object.fromEntries(new Headers(options.headers ?? {}));
  headers.host = u.host;
  const body = options.body === undefined ? undefined : String(options.body);
  if (body !== undefined) headers['content-length'] = Buffer.byteLength(body);
  return new Promise((resolve, reject) => {
    const req = httpRequest({
      host: '127.0.0.1',
      port: u.port || 80,
      path: `${u.pathname}${u.search}`,
      method: options.method ?? 'GET',
      headers,
      signal: options.signal,
    }, (res) => {
      const chunks = [];
      res.on('data', (c) => chunks.push(c));
      res.on('end', () => {
        const h = new Headers();
        for (const [k, v] of Object.entries(res.headers)) {
          for (const x of [v].flat()) h.append(k, String(x));
        }
        const noBody = [204, 304].includes(res.statusCode);
        resolve(new Response(noBody ? null : Buffer.concat(chunks), { status: res.statusCode, headers: h }));
      });
      res.on('error', reject);
    });
    req.on('error', reject);
    req.end(body);
  });
}

server.on('error', (err) => fail(`provider.mjs: listen: ${err.message}`));
server.listen(cfg.port ?? 0, host, async () => {
  try {
    const { port } = server.address();
    const issuer = `http://${host}:${port}`;
    const { privateKey } = await generateKeyPair('RS256', { extractable: true });
    const jwk = { ...(await exportJWK(privateKey)), kid: `rs-${randomBytes(4).toString('hex')}`, use: 'sig', alg: 'RS256' };

    const adapterClient = new MemoryAdapter('Client');
    for (const c of cfg.clients) {
      await adapterClient.upsert(c.client_id, clientMetadata(c));
    }

    provider = new Provider(issuer, {
      adapter: MemoryAdapter,
      jwks: { keys: [jwk] },
      cookies: { keys: [randomBytes(32).toString('base64url')] },
      findAccount: async (_ctx, sub) => ({
        accountId: sub,
        claims: async () => ({
          sub,
          name: `Test User ${sub}`,
          preferred_username: sub,
          email: `${sub}@example.test`,
          email_verified: true,
          ...(cfg.accountClaims?.[sub] ?? {}),
        }),
      }),
      claims: {
        openid: ['sub'],
        profile: ['name', 'preferred_username'],
        email: ['email', 'email_verified'],
        groups: ['groups'],
        roles: ['roles'],
      },
      scopes: ['openid', 'offline_access', 'profile', 'email', 'groups', 'roles'],
      conformIdTokenClaims: !cfg.idTokenClaims,
      pkce: { required: () => true },
      rotateRefreshToken: true,
      // Every code grant gets a refresh token, without offline_access (which
      // oidc-provider only grants with prompt=consent): the gateway is a
      // confidential client whose sessions outlive the access token.
      issueRefreshToken: async (_ctx, client) => client.grantTypeAllowed('refresh_token'),
      ttl: {
        AccessToken: ttl.access,
        AuthorizationCode: 60,
        IdToken: ttl.idToken,
        RefreshToken: ttl.refresh,
        Interaction: 3600,
        Session: ttl.session,
        Grant: ttl.session,
      },
      features: {
        devInteractions: { enabled: true },
        // A confidential client may introspect any token (the tests ask
        // about the gateway's tokens); a client revokes only its own.
        introspection: {
          enabled: true,
          allowedPolicy: async (_ctx, client, token) => client.clientAuthMethod !== 'none' || token.clientId === client.clientId,
        },
        revocation: {
          enabled: true,
          allowedPolicy: async (_ctx, client, token) => token.clientId === client.clientId,
        },
        rpInitiatedLogout: { enabled: true },
        backchannelLogout: { enabled: true },
        userinfo: { enabled: true },
      },
      // oidc-provider's outgoing requests (back-channel logout) refuse
      // special-use addresses, loopback included, against SSRF. Here every
      // peer is on loopback by design, so loopback URLs go out without
      // that guard; any other address keeps it.
      fetch: (target, options) => {
        const { hostname, protocol } = new URL(target);
        if (protocol === 'http:' && hostname.endsWith('.localhost')) {
          return localhostFetch(target, options);
        }
        if (['127.0.0.1', 'localhost', '[::1]'].includes(hostname)) {
          delete options.dispatcher;
        }
        return globalThis.fetch(target, options);
      },
      renderError: async (ctx, out) => {
        ctx.type = 'html';
        ctx.body = `<!DOCTYPE html><html><head><title>oidc-provider error</title></head><body><h1>${escapeHTML(out.error)}</h1><p id="error_description">${escapeHTML(out.error_description ?? '')}</p></body></html>`;
      },
    });

    // devInteractions' layout imports Google Fonts over https; loopback
    // tests have no internet, and a browser would wait for it. Strip it.
    provider.use(async (ctx, next) => {
      await next();
      if (typeof ctx.body === 'string' && ctx.type?.startsWith('text/html')) {
        ctx.body = ctx.body.replace(/@import url\(https:\/\/fonts\.googleapis\.com[^)]*\);/g, '');
      }
    });

    provider.on('grant.success', (ctx) => {
      const gty = ctx.oidc.params?.grant_type ?? 'unknown';
      stats.grants[gty] = (stats.grants[gty] ?? 0) + 1;
    });
    provider.on('grant.error', (_ctx, err) => {
      // error_detail holds the specific reason behind the generic
      // error_description ("grant request is invalid").
      const d = err.error_detail ?? err.error_description ?? err.message;
      stats.grantErrors[d] = (stats.grantErrors[d] ?? 0) + 1;
      if (d === 'refresh token already used') stats.refreshTokenReuse += 1;
    });
    provider.on('backchannel.success', () => { stats.backchannel.success += 1; });
    provider.on('backchannel.error', (_ctx, err) => {
      stats.backchannel.error += 1;
      stats.backchannel.errors.push(err.cause ? `${err.message}: ${err.cause.message ?? err.cause}` : err.message);
    });
    provider.on('end_session.success', () => { stats.endSession += 1; });
    // oidc-provider emits no success event for revocation or introspection
    // (only *.error); the tests read their effect through introspection.
    provider.on('server_error', (_ctx, err) => { process.stderr.write(`server_error: ${err.stack}\n`); });

    process.stdout.write(`${JSON.stringify({ ready: true, issuer, admin: `${issuer}/_admin` })}\n`);
  } catch (err) {
    fail(`provider.mjs: ${err.stack ?? err}`);
  }
});

function escapeHTML(s) {
  return String(s).replace(/[&<>"']/g, (ch) => ({
    '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;', "'": '&#39;',
  }[ch]));
}

for (const sig of ['SIGTERM', 'SIGINT']) {
  process.on(sig, () => { server.closeAllConnections(); process.exit(0); });
}
