// jose.mjs verifies and forges JOSE tokens with panva's jose, an
// implementation independent of the go-jose library bffgate's issuer uses.
//
// Usage: node jose.mjs
//
// Prints {"ready":true}, then reads one JSON command per stdin line,
// {"id": N, "op": "...", ...}, and answers each with one stdout line
// {"id": N, "ok": true, "result": ...} or {"id": N, "ok": false, "error":
// {name, code, message, claim, reason}}.
//
// Ops:
//   verify {token, jwks_uri | secret, issuer?, audience?, typ?, algorithms?,
//           access_token?, required_claims?, fresh?}
//       jwtVerify through createRemoteJWKSet(jwks_uri) (cached per URI unless
//       fresh) or an HMAC secret (base64url). access_token: true requires typ
//       at+jwt and the RFC 9068 §2.2 claims. -> {payload, protected_header}
//   decrypt {token, key (base64url of the dir key), issuer?, audience?, typ?,
//            enc?} -> {payload, protected_header}
//   decode {token} -> {payload?, protected_header} (no verification)
//   forge {kind, token, jwks_uri?} -> {token}; kinds:
//       alg_none        the token's header and claims, alg "none", no signature
//       hs256_pubkey    HS256 keyed with the PEM of the RSA public key the
//                       token's kid names at jwks_uri (RFC 8725 §2.1)
//       unknown_kid     re-signed with a fresh key of the same alg under a
//                       kid the issuer never published
//       tampered_payload  claims changed (sub), original signature kept
//       tampered_jwe    a compact JWE with one ciphertext byte flipped
//   sign {claims, private_jwk, alg?, kid?} -> {token}: a JWT signed with
//       jose.SignJWT (a client assertion, a JWT-SVID, a trusted issuer's
//       assertion); alg defaults to the JWK's alg.
import { randomBytes } from 'node:crypto';

import * as jose from 'jose';
import { serveLines } from './lines.mjs';

const jwksCache = new Map();
function remoteJWKS(uri, fresh) {
  if (fresh || !jwksCache.has(uri)) {
    jwksCache.set(uri, jose.createRemoteJWKSet(new URL(uri)));
  }
  return jwksCache.get(uri);
}

// RFC 9068 §2.2: claims an access token in JWT format must carry.
const RFC9068_CLAIMS = ['iss', 'exp', 'aud', 'sub', 'client_id', 'iat', 'jti'];

function errorJSON(err) {
  return {
    name: err?.name ?? 'Error',
    code: err?.code,
    message: err?.message ?? String(err),
    claim: err?.claim,
    reason: err?.reason,
  };
}

const enc = new TextEncoder();
const b64 = (obj) => jose.base64url.encode(typeof obj === 'string' ? obj : JSON.stringify(obj));

function parts(token) {
  const p = String(token).split('.');
  if (p.length !== 3 && p.length !== 5) {
    throw new Error(`not a compact JWS (3 parts) or JWE (5 parts): ${p.length} parts`);
  }
  return p;
}

async function publicJWK(jwksURI, kid) {
  const res = await fetch(jwksURI);
  if (!res.ok) throw new Error(`GET ${jwksURI}: ${res.status}`);
  const { keys } = await res.json();
  const k = keys.find((x) => (kid ? x.kid === kid : x.kty === 'RSA'));
  if (!k) throw new Error(`no key with kid ${kid} at ${jwksURI}`);
  return k;
}

const ops = {
  async verify(cmd) {
    let key;
    if (cmd.jwks_uri) key = remoteJWKS(cmd.jwks_uri, cmd.fresh);
    else if (cmd.secret) key = jose.base64url.decode(cmd.secret);
    else throw new Error('verify needs jwks_uri or secret');
    const opts = {
      issuer: cmd.issuer,
      audience: cmd.audience,
      algorithms: cmd.algorithms,
      typ: cmd.typ,
      requiredClaims: cmd.required_claims,
    };
    if (cmd.access_token) {
      opts.typ = 'at+jwt';
      opts.requiredClaims = [...new Set([...(opts.requiredClaims ?? []), ...RFC9068_CLAIMS])];
    }
    const { payload, protectedHeader } = await jose.jwtVerify(cmd.token, key, opts);
    if (cmd.access_token) {
      // RFC 9068 §2.2: client_id and sub are strings; aud a string or array.
      for (const c of ['client_id', 'sub', 'jti']) {
        if (typeof payload[c] !== 'string') {
          throw new Error(`RFC 9068: claim ${c} must be a string, got ${typeof payload[c]}`);
        }
      }
      if (payload.scope !== undefined && typeof payload.scope !== 'string') {
        throw new Error('RFC 9068: claim scope must be a space-separated string');
      }
    }
    return { payload, protected_header: protectedHeader };
  },

  async decrypt(cmd) {
    const key = jose.base64url.decode(cmd.key);
    const { payload, protectedHeader } = await jose.jwtDecrypt(cmd.token, key, {
      keyManagementAlgorithms: ['dir'],
      contentEncryptionAlgorithms: cmd.enc ? [cmd.enc] : undefined,
      issuer: cmd.issuer,
      audience: cmd.audience,
      typ: cmd.typ,
    });
    return { payload, protected_header: protectedHeader };
  },

  async decode(cmd) {
    const header = jose.decodeProtectedHeader(cmd.token);
    const out = { protected_header: header };
    if (parts(cmd.token).length === 3) out.payload = jose.decodeJwt(cmd.token);
    return out;
  },

  async sign(cmd) {
    const alg = cmd.alg ?? cmd.private_jwk.alg;
    const key = await jose.importJWK(cmd.private_jwk, alg);
    const header = { alg, typ: 'JWT' };
    if (cmd.kid ?? cmd.private_jwk.kid) header.kid = cmd.kid ?? cmd.private_jwk.kid;
    return { token: await new jose.SignJWT(cmd.claims).setProtectedHeader(header).sign(key) };
  },

  async forge(cmd) {
    const p = parts(cmd.token);
    switch (cmd.kind) {
      case 'alg_none': {
        const header = { ...jose.decodeProtectedHeader(cmd.token), alg: 'none' };
        return { token: `${b64(header)}.${p[1]}.` };
      }
      case 'hs256_pubkey': {
        const header = jose.decodeProtectedHeader(cmd.token);
        const jwk = await publicJWK(cmd.jwks_uri, header.kid);
        const pub = await jose.importJWK({ kty: jwk.kty, n: jwk.n, e: jwk.e, crv: jwk.crv, x: jwk.x, y: jwk.y }, jwk.alg ?? 'RS256', { extractable: true });
        const pem = await jose.exportSPKI(pub);
        const payload = jose.decodeJwt(cmd.token);
        const token = await new jose.SignJWT(payload)
          .setProtectedHeader({ ...header, alg: 'HS256' })
          .sign(enc.encode(pem));
        return { token };
      }
      case 'unknown_kid': {
        const header = jose.decodeProtectedHeader(cmd.token);
        const payload = jose.decodeJwt(cmd.token);
        const newHeader = { ...header, kid: `unknown-${randomBytes(6).toString('hex')}` };
        let key;
        if (header.alg.startsWith('HS')) key = randomBytes(64);
        else key = (await jose.generateKeyPair(header.alg)).privateKey;
        const token = await new jose.SignJWT(payload).setProtectedHeader(newHeader).sign(key);
        return { token };
      }
      case 'tampered_payload': {
        const payload = jose.decodeJwt(cmd.token);
        payload.sub = `${payload.sub ?? ''}-tampered`;
        return { token: `${p[0]}.${b64(payload)}.${p[2]}` };
      }
      case 'tampered_jwe': {
        if (p.length !== 5) throw new Error('tampered_jwe needs a compact JWE (5 parts)');
        const ct = jose.base64url.decode(p[3]);
        ct[0] ^= 0x01;
        p[3] = jose.base64url.encode(ct);
        return { token: p.join('.') };
      }
      default:
        throw new Error(`unknown forge kind ${JSON.stringify(cmd.kind)}: use alg_none, hs256_pubkey, unknown_kid, tampered_payload or tampered_jwe`);
    }
  },
};

process.stdout.write(`${JSON.stringify({ ready: true })}\n`);

serveLines(ops, errorJSON);
