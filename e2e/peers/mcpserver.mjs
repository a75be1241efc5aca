// An MCP server built with the official TypeScript SDK
// (@modelcontextprotocol/sdk): Streamable HTTP, stateless, answers as SSE
// streams (the SDK's default). bffgate's e2e tests run it as the upstream
// of a gateway route. It trusts whoever reaches it (the gateway checks the
// caller) and tells, in its tools' answers, which token it was sent.
//
// Tools: whoami (the claims of the token this server got, read without
// verification: it is a test's window on what the gateway forwards),
// progress (three progress notifications on the stream, then the result),
// admin_stats (a tool the gateway gives only to tokens with a wider scope),
// delete_repo (which the gateway's policy denies in the tests; it must
// never run: it says so on stderr if it does).
//
// Prints {"ready": true, "url"} once listening on 127.0.0.1 (a free port).
import * as http from 'node:http';
import { McpServer } from '@modelcontextprotocol/sdk/server/mcp.js';
import { StreamableHTTPServerTransport } from '@modelcontextprotocol/sdk/server/streamableHttp.js';

function claimsOf(authorization) {
  const m = /^Bearer (.+)$/i.exec(authorization ?? '');
  if (!m) return null;
  const parts = m[1].split('.');
  if (parts.length !== 3) return { opaque: true };
  try {
    return JSON.parse(Buffer.from(parts[1], 'base64url').toString('utf8'));
  } catch {
    return { unreadable: true };
  }
}

let deleted = 0;

function newServer(req) {
  const server = new McpServer({ name: 'bffgate-e2e-mcp', version: '1.0.0' });
  server.registerTool('whoami', { description: 'The claims of the access token this server received' }, async () => {
    const c = claimsOf(req.headers.authorization);
    return { content: [{ type: 'text', text: JSON.stringify({ claims: c, sawAuthorization: Boolean(req.headers.authorization) }) }] };
  });
  server.registerTool('progress', { description: 'Three progress notifications, then done' }, async (extra) => {
    const token = extra?._meta?.progressToken;
    for (let i = 1; i <= 3; i++) {
      if (token !== undefined) {
        await extra.sendNotification({ method: 'notifications/progress', params: { progressToken: token, progress: i, total: 3 } });
      }
      await new Promise((r) => setTimeout(r, 20));
    }
    return { content: [{ type: 'text', text: 'done' }] };
  });
  server.registerTool('admin_stats', { description: 'Statistics (the gateway asks for mcp:admin)' }, async () => {
    return { content: [{ type: 'text', text: 'stats' }] };
  });
  server.registerTool('delete_repo', { description: 'Deletes everything (denied by the gateway)' }, async () => {
    deleted++;
    process.stderr.write('delete_repo RAN: the gateway let it through\n');
    return { content: [{ type: 'text', text: 'deleted' }] };
  });
  return server;
}

const srv = http.createServer(async (req, res) => {
  if (req.url === '/calls') {
    res.setHeader('content-type', 'application/json');
    res.end(JSON.stringify({ deleted }));
    return;
  }
  if (req.method !== 'POST') {
    // Stateless: no standalone GET stream, no session to DELETE.
    res.writeHead(405, { 'content-type': 'application/json', allow: 'POST' });
    res.end(JSON.stringify({ jsonrpc: '2.0', id: null, error: { code: -32000, message: 'Method not allowed.' } }));
    return;
  }
  const server = newServer(req);
  const transport = new StreamableHTTPServerTransport({ sessionIdGenerator: undefined });
  res.on('close', () => { transport.close(); server.close(); });
  try {
    await server.connect(transport);
    await transport.handleRequest(req, res);
  } catch (err) {
    process.stderr.write(`mcp server: ${err?.stack ?? err}\n`);
    if (!res.headersSent) {
      res.writeHead(500, { 'content-type': 'application/json' });
      res.end(JSON.stringify({ jsonrpc: '2.0', id: null, error: { code: -32603, message: 'Internal server error' } }));
    }
  }
});
srv.listen(0, '127.0.0.1', () => {
  const { port } = srv.address();
  process.stdout.write(`${JSON.stringify({ ready: true, url: `http://127.0.0.1:${port}` })}\n`);
});
process.stdin.on('end', () => process.exit(0));
process.stdin.resume();
