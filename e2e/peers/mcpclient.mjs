// An MCP client built with the official TypeScript SDK
// (@modelcontextprotocol/sdk): Streamable HTTP, driven by bffgate's e2e
// tests over the line protocol of lines.mjs.
//
// Ops:
//   connect {url, token}  connects (initialize) with a bearer token
//                         obtained elsewhere; answers the server info
//   tools                 tools/list: the tool names
//   call {name, progress} tools/call; answers {text, progress: [events]}
//                         or fails with the JSON-RPC error the SDK raised
//                         (name McpError, code, message)
//   close
//
// With the SDK's own OAuth flow (its OAuthClientProvider, in memory):
//   oauthConnect {url, redirect_uri, client_metadata_url?, client_name?}
//                         connects; when the server asks for a token (401,
//                         or 403 insufficient_scope) the SDK discovers the
//                         authorization server from the resource metadata,
//                         registers (DCR, or a client ID metadata document
//                         URL when the issuer supports them and one is
//                         given) and builds the authorization URL, which
//                         this op answers as {authorization_url} for the
//                         test to drive; {connected: true} otherwise
//   oauthFinish {code}    exchanges the code (with the resource) and
//                         connects again
//   oauthCall {name}      tools/call; a step-up that needs the user again
//                         answers {authorization_url} instead
//   oauthState            the client registration and the tokens (the test
//                         inspects aud and scope)
//   oauthSpoilAccess      replaces the access token with an invalid one,
//                         so that the next request is a 401 and the SDK
//                         refreshes
//   oauthDropRefresh      drops the refresh token only
//   oauthForget           drops the tokens (a new authorization follows)
import { Client } from '@modelcontextprotocol/sdk/client/index.js';
import { StreamableHTTPClientTransport, StreamableHTTPError } from '@modelcontextprotocol/sdk/client/streamableHttp.js';
import { UnauthorizedError } from '@modelcontextprotocol/sdk/client/auth.js';
import { serveLines } from './lines.mjs';

function errorJSON(err) {
  return {
    name: err?.name ?? 'Error',
    message: err?.message ?? String(err),
    code: err?.code !== undefined ? String(err.code) : undefined,
    status: err instanceof StreamableHTTPError ? err.code : undefined,
    cause: err?.cause ? String(err.cause?.message ?? err.cause) : undefined,
  };
}

let client;

// provider is an in-memory OAuthClientProvider: what a desktop client
// keeps in its keychain. redirectToAuthorization records the URL instead
// of opening a browser.
class Provider {
  constructor(cfg) {
    this.cfg = cfg;
    this.info = undefined;
    this.tok = undefined;
    this.verifier = undefined;
    this.authURL = undefined;
  }
  get redirectUrl() { return this.cfg.redirect_uri; }
  get clientMetadataUrl() { return this.cfg.client_metadata_url || undefined; }
  get clientMetadata() {
    return {
      client_name: this.cfg.client_name || 'bffgate e2e agent',
      redirect_uris: [this.cfg.redirect_uri],
      grant_types: ['authorization_code', 'refresh_token'],
      response_types: ['code'],
      token_endpoint_auth_method: 'none',
    };
  }
  clientInformation() { return this.info; }
  saveClientInformation(info) { this.info = info; }
  tokens() { return this.tok; }
  saveTokens(t) { this.tok = t; }
  redirectToAuthorization(u) { this.authURL = u.toString(); }
  saveCodeVerifier(v) { this.verifier = v; }
  codeVerifier() { return this.verifier; }
}

let oauth; // {provider, url, transport}

async function oauthTransport() {
  oauth.transport = new StreamableHTTPClientTransport(new URL(oauth.url), { authProvider: oauth.provider });
  client = new Client({ name: 'bffgate-e2e-client', version: '1.0.0' });
  oauth.provider.authURL = undefined;
  try {
    await client.connect(oauth.transport);
    return { connected: true };
  } catch (err) {
    if (err instanceof UnauthorizedError && oauth.provider.authURL) {
      return { authorization_url: oauth.provider.authURL };
    }
    throw err;
  }
}

const ops = {
  async connect({ url, token }) {
    client = new Client({ name: 'bffgate-e2e-client', version: '1.0.0' });
    const headers = token ? { authorization: `Bearer ${token}` } : {};
    const transport = new StreamableHTTPClientTransport(new URL(url), { requestInit: { headers } });
    await client.connect(transport);
    return { server: client.getServerVersion() };
  },
  async tools() {
    const res = await client.listTools();
    return { names: res.tools.map((t) => t.name) };
  },
  async call({ name, progress }) {
    const events = [];
    const opts = progress ? { onprogress: (p) => events.push(p) } : undefined;
    const res = await client.callTool({ name, arguments: {} }, undefined, opts);
    return { text: res.content?.map((c) => c.text).join('') ?? '', isError: Boolean(res.isError), progress: events };
  },
  async oauthConnect(cmd) {
    oauth = { provider: new Provider(cmd), url: cmd.url };
    return oauthTransport();
  },
  async oauthFinish({ code }) {
    await oauth.transport.finishAuth(code);
    return oauthTransport();
  },
  async oauthCall({ name }) {
    oauth.provider.authURL = undefined;
    try {
      const res = await client.callTool({ name, arguments: {} });
      return { text: res.content?.map((c) => c.text).join('') ?? '', isError: Boolean(res.isError) };
    } catch (err) {
      if (err instanceof UnauthorizedError && oauth.provider.authURL) {
        return { authorization_url: oauth.provider.authURL };
      }
      throw err;
    }
  },
  async oauthState() {
    return { client: oauth.provider.info ?? null, tokens: oauth.provider.tok ?? null };
  },
  async oauthSpoilAccess() {
    oauth.provider.tok = { ...oauth.provider.tok, access_token: 'spoiled' };
    return {};
  },
  async oauthDropRefresh() {
    const { refresh_token: _, ...rest } = oauth.provider.tok ?? {};
    oauth.provider.tok = rest;
    return {};
  },
  async oauthForget() {
    oauth.provider.tok = undefined;
    return {};
  },
  async close() {
    await client?.close();
    return {};
  },
};

process.stdout.write(`${JSON.stringify({ ready: true })}\n`);
serveLines(ops, errorJSON);
