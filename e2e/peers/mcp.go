package peers

import (
	"context"
	"encoding/json"
	"testing"
)

// MCPServer is an MCP server of the official TypeScript SDK
// (mcpserver.mjs): Streamable HTTP on URL + any path, stateless, tools
// whoami, progress, admin_stats and delete_repo.
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

// OAuthOptions configure the SDK client's own OAuth flow.
type OAuthOptions struct {
	URL         string // the MCP server (the gateway route)
	RedirectURI string // a loopback redirect URI; the test reads the code from it
	// ClientMetadataURL, when set and the issuer announces
	// client_id_metadata_document_supported, is the client_id (a client
	// ID metadata document); otherwise the SDK registers (RFC 7591).
	ClientMetadataURL string
	ClientName        string
}

// OAuthStep is where the SDK's flow stands: connected, or waiting for the
// user at AuthorizationURL (the test drives the issuer's pages and calls
// OAuthFinish with the code). A tool call answers Result when it ran.
type OAuthStep struct {
	Connected        bool   `json:"connected"`
	AuthorizationURL string `json:"authorization_url"`
	Text             string `json:"text"`
	IsError          bool   `json:"isError"`
}

// OAuthConnect connects with the SDK's OAuth client provider: discovery
// from the 401, registration, and the authorization URL.
func (c *MCPClient) OAuthConnect(ctx context.Context, o OAuthOptions) (OAuthStep, error) {
	var s OAuthStep
	err := c.proc.call(ctx, "oauthConnect", map[string]any{"url": o.URL, "redirect_uri": o.RedirectURI,
		"client_metadata_url": o.ClientMetadataURL, "client_name": o.ClientName}, &s)
	return s, err
}

// OAuthFinish hands the SDK the authorization code; it exchanges it and
// connects again.
func (c *MCPClient) OAuthFinish(ctx context.Context, code string) (OAuthStep, error) {
	var s OAuthStep
	err := c.proc.call(ctx, "oauthFinish", map[string]any{"code": code}, &s)
	return s, err
}

// OAuthCall calls a tool on the OAuth connection; a step-up that needs the
// user answers AuthorizationURL.
func (c *MCPClient) OAuthCall(ctx context.Context, name string) (OAuthStep, error) {
	var s OAuthStep
	err := c.proc.call(ctx, "oauthCall", map[string]any{"name": name}, &s)
	return s, err
}

// OAuthState is the SDK's saved client registration and tokens.
type OAuthState struct {
	Client map[string]any `json:"client"`
	Tokens map[string]any `json:"tokens"`
}

// OAuthState returns what the SDK's provider saved.
func (c *MCPClient) OAuthState(ctx context.Context) (OAuthState, error) {
	var s OAuthState
	err := c.proc.call(ctx, "oauthState", nil, &s)
	return s, err
}

// OAuthSpoilAccess makes the saved access token invalid: the next request
// is a 401, on which the SDK refreshes.
func (c *MCPClient) OAuthSpoilAccess(ctx context.Context) error {
	return c.proc.call(ctx, "oauthSpoilAccess", nil, nil)
}

// OAuthDropRefresh drops the saved refresh token only.
func (c *MCPClient) OAuthDropRefresh(ctx context.Context) error {
	return c.proc.call(ctx, "oauthDropRefresh", nil, nil)
}

// OAuthForget drops the saved tokens: the next 401 or 403 starts a new
// authorization.
func (c *MCPClient) OAuthForget(ctx context.Context) error {
	return c.proc.call(ctx, "oauthForget", nil, nil)
}
