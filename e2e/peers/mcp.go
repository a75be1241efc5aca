package peers

import (
	"context"
	"encoding/json"
	"testing"
)

// MCPServer is an MCP server of the official TypeScript SDK
// (mcpserver.mjs): Streamable HTTP on URL + any path, stateless, tools
// whoami, progress and delete_repo.
type MCPServer struct {
	URL  string
	proc *proc
}

// StartMCPServer starts mcpserver.mjs on a free loopback port; it stops
// when the test ends.
func StartMCPServer(t testing.TB) *MCPServer {
	t.Helper()
	p, line := startProc(t, "mcpserver.mjs")
	var ready struct {
		URL string `json:"url"`
	}
	if err := json.Unmarshal(line, &ready); err != nil || ready.URL == "" {
		t.Fatalf("mcpserver.mjs ready line %s: %v", line, err)
	}
	return &MCPServer{URL: ready.URL, proc: p}
}

// Stderr is what the server printed on stderr so far.
func (s *MCPServer) Stderr() string { return s.proc.stderr.String() }

// MCPClient is the official TypeScript SDK's MCP client (mcpclient.mjs).
type MCPClient struct {
	proc *proc
}

// StartMCPClient starts mcpclient.mjs; it stops when the test ends.
func StartMCPClient(t testing.TB) *MCPClient {
	t.Helper()
	p, _ := startProc(t, "mcpclient.mjs")
	return &MCPClient{proc: p}
}

// Connect runs initialize against url with token as the bearer token
// ("" for none). A refusal is a *PeerError (name StreamableHTTPError,
// Status the HTTP status).
func (c *MCPClient) Connect(ctx context.Context, url, token string) error {
	return c.proc.call(ctx, "connect", map[string]any{"url": url, "token": token}, nil)
}

// Tools lists the server's tool names (tools/list).
func (c *MCPClient) Tools(ctx context.Context) ([]string, error) {
	var out struct {
		Names []string `json:"names"`
	}
	err := c.proc.call(ctx, "tools", nil, &out)
	return out.Names, err
}

// ToolResult is a tools/call answer as the SDK gave it.
type ToolResult struct {
	Text     string            `json:"text"`
	IsError  bool              `json:"isError"`
	Progress []json.RawMessage `json:"progress"`
}

// Call calls the tool name with no arguments; progress asks for progress
// notifications (a progressToken). A JSON-RPC error is a *PeerError with
// name McpError and the JSON-RPC code in Code.
func (c *MCPClient) Call(ctx context.Context, name string, progress bool) (*ToolResult, error) {
	var out ToolResult
	if err := c.proc.call(ctx, "call", map[string]any{"name": name, "progress": progress}, &out); err != nil {
		return nil, err
	}
	return &out, nil
}

// Close closes the client's transport.
func (c *MCPClient) Close(ctx context.Context) error {
	return c.proc.call(ctx, "close", nil, nil)
}
