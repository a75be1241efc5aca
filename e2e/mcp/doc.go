// Package mcp holds bffgate's Model Context Protocol tests (issue 18)
// against the real binary (e2e/stack) with the official TypeScript SDK
// (@modelcontextprotocol/sdk, from e2e/peers' lock file): an MCP server of
// the SDK (Streamable HTTP, SSE answers) is the upstream of a gateway
// route with auth bearer and an mcp tool policy, and the SDK's client
// calls its tools through the gateway:
//
//   - with a token the test got from the embedded issuer (client
//     credentials, aud the route's resource): tools/list and a tool call
//     work, the server gets the gateway's own token and never the
//     caller's, a denied tool is the JSON-RPC error the SDK raises (the
//     server never runs it), progress notifications stream through
//     (SSE), a tool needing a scope the token lacks is 403
//     insufficient_scope, and a token for another resource, none, or
//     one in the query string is refused;
//   - with the SDK's own OAuth flow (TestSDKOAuthFlow), once with dynamic
//     registration and once with a client ID metadata document served
//     over https by the test: discovery from the gateway's 401 (RFC 9728,
//     RFC 8414), the issuer's login and consent pages driven over HTTP,
//     the code exchanged with the resource (the token's aud is the
//     route), a route that introspects every token, a denied tool, a
//     refresh after a refused access token, and step-up to mcp:admin.
//
// Run them with
//
//	BFFGATE_E2E_REQUIRE=1 go test -count=1 ./e2e/mcp/
package mcp
