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
import { Client } from '@modelcontextprotocol/sdk/client/index.js';
import { StreamableHTTPClientTransport, StreamableHTTPError } from '@modelcontextprotocol/sdk/client/streamableHttp.js';
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
  async close() {
    await client?.close();
    return {};
  },
};

process.stdout.write(`${JSON.stringify({ ready: true })}\n`);
serveLines(ops, errorJSON);
