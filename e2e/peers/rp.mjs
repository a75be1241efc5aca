// rp.mjs drives an OpenID provider (bffgate's embedded issuer, or
// oidc-provider in the harness self-tests) with panva's openid-client, an
// OpenID Certified relying party, so Go tests can check the issuer against
// an implementation no one here wrote.
//
// Usage: node rp.mjs '<config JSON>'
//   {"issuer": "...", "client_id": "...", "client_secret": "...",
//    "redirect_uri": "...", "auth_method": "client_secret_basic" |
//    "client_secret_post" | "client_secret_jwt" | "private_key_jwt" |
//    "none", "private_jwk": {...} (private_key_jwt: the client's key, a JWK
//    with alg and kid)}
//
// It runs discovery first and prints {"ready":true,"metadata":{...}} (or
// {"ready":false,"error":{...}} and exits 1). Then it reads one JSON command
// per stdin line, {"id": N, "op": "...", ...}, and answers each with one
// stdout line {"id": N, "ok": true, "result": ...} or {"id": N, "ok": false,
// "error": {name, message, code, error, error_description, status}}.
// Commands run concurrently; answers carry the id of their command.
//
// Ops:
//   discover                                  -> server metadata
//   authorize {scope?, params?}               -> {url, state, nonce, code_verifier}
//   callback {url, state}                     -> tokens (code exchange; the ID
//                                                token is validated and its
//                                                claims returned)
//   refresh {refresh_token, params?}          -> tokens
//   userinfo {access_token, sub?}             -> userinfo claims
//   introspect {token, token_type_hint?}      -> introspection response
//   revoke {token, token_type_hint?}          -> {}
//   end_session_url {id_token_hint?, post_logout_redirect_uri?, state?} -> {url}
//   client_credentials {scope?}               -> tokens
//   grant {grant_type, params}                -> the token endpoint's response
//                                                (genericGrantRequest: token
//                                                exchange, jwt-bearer); a param
//                                                given as a list is repeated

import * as client from 'openid-client';
import { serveLines } from './lines.mjs';

const cfg = JSON.parse(process.argv[2] ?? '{}');

function errorJSON(err) {
  return {
    name: err?.name ?? 'Error',
    message: err?.message ?? String(err),
    code: err?.code,
    error: err?.error,
    error_description: err?.error_description,
    status: err?.status,
    cause: err?.cause ? String(err.cause?.message ?? err.cause) : undefined,
  };
}

let privateKey;
if (cfg.auth_method === 'private_key_jwt') {
  const jwk = cfg.private_jwk;
  const params = jwk.kty === 'EC' ? { name: 'ECDSA', namedCurve: jwk.crv } : { name: 'RSASSA-PKCS1-v1_5', hash: 'SHA-256' };
  privateKey = { kid: jwk.kid, key: await crypto.subtle.importKey('jwk', jwk, params, false, ['sign']) };
}

function clientAuth() {
  switch (cfg.auth_method || 'client_secret_basic') {
    case 'private_key_jwt': return client.PrivateKeyJwt(privateKey);
    case 'client_secret_basic': return client.ClientSecretBasic(cfg.client_secret);
    case 'client_secret_post': return client.ClientSecretPost(cfg.client_secret);
    case 'client_secret_jwt': return client.ClientSecretJwt(cfg.client_secret);
    case 'none': return client.None();
    default: throw new Error(`unknown auth_method ${cfg.auth_method}: use client_secret_basic, client_secret_post, client_secret_jwt or none`);
  }
}

async function discover() {
  return client.discovery(
    new URL(cfg.issuer),
    cfg.client_id,
    { client_secret: cfg.client_secret, redirect_uris: [cfg.redirect_uri] },
    clientAuth(),
    { execute: [client.allowInsecureRequests] },
  );
}

let config;
try {
  config = await discover();
} catch (err) {
  process.stdout.write(`${JSON.stringify({ ready: false, error: errorJSON(err) })}\n`);
  process.exit(1);
}
process.stdout.write(`${JSON.stringify({ ready: true, metadata: config.serverMetadata() })}\n`);

// Authorization requests in flight, by state: the PKCE verifier and nonce
// never leave this process except in the authorize answer (for tests that
// want to replay them).
const pending = new Map();

function tokensJSON(res) {
  const out = { ...res };
  const claims = res.claims?.();
  if (claims) out.id_token_claims = claims;
  return out;
}

const ops = {
  async discover() {
    config = await discover();
    return config.serverMetadata();
  },
  async authorize(cmd) {
    const codeVerifier = client.randomPKCECodeVerifier();
    const state = client.randomState();
    const nonce = client.randomNonce();
    const params = {
      redirect_uri: cfg.redirect_uri,
      scope: cmd.scope ?? 'openid profile email',
      code_challenge: await client.calculatePKCECodeChallenge(codeVerifier),
      code_challenge_method: 'S256',
      state,
      nonce,
      ...(cmd.params ?? {}),
    };
    pending.set(state, { codeVerifier, nonce });
    const url = client.buildAuthorizationUrl(config, params);
    return { url: url.href, state, nonce, code_verifier: codeVerifier };
  },
  async callback(cmd) {
    const p = pending.get(cmd.state);
    if (!p) throw new Error(`no authorization request with state ${cmd.state}: call authorize first`);
    pending.delete(cmd.state);
    const res = await client.authorizationCodeGrant(config, new URL(cmd.url), {
      pkceCodeVerifier: p.codeVerifier,
      expectedState: cmd.state,
      expectedNonce: p.nonce,
      idTokenExpected: true,
    });
    return tokensJSON(res);
  },
  async refresh(cmd) {
    return tokensJSON(await client.refreshTokenGrant(config, cmd.refresh_token, cmd.params));
  },
  async userinfo(cmd) {
    return client.fetchUserInfo(config, cmd.access_token, cmd.sub ?? client.skipSubjectCheck);
  },
  async introspect(cmd) {
    const params = cmd.token_type_hint ? { token_type_hint: cmd.token_type_hint } : undefined;
    return client.tokenIntrospection(config, cmd.token, params);
  },
  async revoke(cmd) {
    const params = cmd.token_type_hint ? { token_type_hint: cmd.token_type_hint } : undefined;
    await client.tokenRevocation(config, cmd.token, params);
    return {};
  },
  async client_credentials(cmd) {
    return tokensJSON(await client.clientCredentialsGrant(config, cmd.scope ? { scope: cmd.scope } : {}));
  },
  async grant(cmd) {
    const params = new URLSearchParams();
    for (const [k, v] of Object.entries(cmd.params ?? {})) {
      for (const one of Array.isArray(v) ? v : [v]) params.append(k, one);
    }
    return client.genericGrantRequest(config, cmd.grant_type, params);
  },
  async end_session_url(cmd) {
    const params = {};
    for (const k of ['id_token_hint', 'post_logout_redirect_uri', 'state']) {
      if (cmd[k]) params[k] = cmd[k];
    }
    return { url: client.buildEndSessionUrl(config, params).href };
  },
};

serveLines(ops, errorJSON);
