package mcp

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/bffgate/bffgate/e2e/peers"
	"github.com/bffgate/bffgate/e2e/stack"
	"github.com/bffgate/bffgate/internal/testhttp"
)

const (
	agentID       = "agent"
	agentSecret   = "agent-secret-0123456789abcdef"
	strangerID    = "stranger"
	mcpDeniedCode = "-32003" // bff.MCPDeniedCode
)

func ctxT(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	t.Cleanup(cancel)
	return ctx
}

// env is the binary with an MCP route in front of the SDK's server.
type env struct {
	st     *stack.Stack
	server *peers.MCPServer
	mcpURL string // the route: what MCP clients connect to
}

func newEnv(t *testing.T) *env {
	t.Helper()
	peers.NodeModules(t)
	e := &env{server: peers.StartMCPServer(t)}
	port := stack.FreePort(t)
	gw := fmt.Sprintf("http://127.0.0.1:%d", port)
	e.mcpURL = gw + "/mcp"
	yaml := fmt.Sprintf(`issuer:
  clients:
    - id: %[1]s
      secret: %[2]s
      grant_types: [client_credentials]
    - id: %[3]s
      secret: %[2]s
      grant_types: [client_credentials]
      audience: ["%[4]s/elsewhere"]
gateway:
  routes:
    - prefix: /mcp/
      upstream: %[5]s
      policy: client
      auth: [bearer]
      scopes: [profile]
      mcp:
        tools:
          deny: [delete_*]
          scopes: {admin_*: [roles]}
`, agentID, agentSecret, strangerID, gw, e.server.URL)
	e.st = stack.Start(t, stack.Options{ConfigYAML: yaml, GatewayPort: port})
	return e
}

// waitLog reports whether the process logs s within a few seconds (its
// output reaches the test through a pipe).
func (e *env) waitLog(s string) bool {
	for deadline := time.Now().Add(5 * time.Second); time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
		if strings.Contains(e.st.Logs(), s) {
			return true
		}
	}
	return false
}

// token gets a client_credentials token of client id with scope; the
// agent names the route as its resource (RFC 8707: the token's aud), the
// stranger has its configured audience (another server).
func (e *env) token(t *testing.T, id, scope string) string {
	t.Helper()
	form := url.Values{"grant_type": {"client_credentials"}, "scope": {scope}}
	if id == agentID {
		form.Set("resource", e.mcpURL)
	}
	req, _ := http.NewRequest(http.MethodPost, e.st.IssuerURL+"/token", strings.NewReader(form.Encode()))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.SetBasicAuth(id, agentSecret)
	resp, err := testhttp.Client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	var out struct {
		AccessToken string `json:"access_token"`
	}
	if resp.StatusCode != http.StatusOK || json.Unmarshal(body, &out) != nil || out.AccessToken == "" {
		t.Fatalf("client_credentials for %s: %d %s", id, resp.StatusCode, body)
	}
	return out.AccessToken
}

// TestSDKWithClientToken: the SDK's client with a token obtained
// directly: the tools list, a tool call (the server sees the gateway's
// token, not the client's), a denied tool (the JSON-RPC error the SDK
// raises; the tool never runs), progress notifications streamed (SSE),
// step-up for a tool needing roles; refused: a token for another
// resource, none, a token in the query string.
func TestSDKWithClientToken(t *testing.T) {
	e := newEnv(t)
	ctx := ctxT(t)
	tok := e.token(t, agentID, "profile")

	c := peers.StartMCPClient(t)
	if err := c.Connect(ctx, e.mcpURL, tok); err != nil {
		t.Fatalf("connect through the gateway: %v\n%s", err, e.st.Logs())
	}
	names, err := c.Tools(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if strings.Join(names, ",") != "whoami,progress,admin_stats,delete_repo" {
		t.Fatalf("tools %v", names)
	}

	res, err := c.Call(ctx, "whoami", false)
	if err != nil {
		t.Fatalf("whoami: %v", err)
	}
	var who struct {
		Claims map[string]any `json:"claims"`
	}
	if err := json.Unmarshal([]byte(res.Text), &who); err != nil {
		t.Fatalf("whoami answer %q: %v", res.Text, err)
	}
	if who.Claims["client_id"] != "bffgate" || who.Claims["sub"] != "client:bffgate" {
		t.Fatalf("the MCP server got a token of %v for %v: want the gateway's own (client bffgate), never the caller's", who.Claims["client_id"], who.Claims["sub"])
	}

	_, err = c.Call(ctx, "delete_repo", false)
	var pe *peers.PeerError
	if !errors.As(err, &pe) || pe.Name != "McpError" || pe.Code != mcpDeniedCode || !strings.Contains(pe.Message, "delete_repo") {
		t.Fatalf("denied tool: %v", err)
	}
	if strings.Contains(e.server.Stderr(), "delete_repo RAN") {
		t.Fatal("the denied tool ran on the server")
	}
	if !e.waitLog(`"tool":"delete_repo","decision":"denied"`) {
		t.Fatalf("no audit line for the denied call:\n%s", e.st.Logs())
	}
	if strings.Contains(e.st.Logs(), tok) {
		t.Fatal("the caller's token is in the log")
	}

	res, err = c.Call(ctx, "progress", true)
	if err != nil {
		t.Fatalf("progress: %v", err)
	}
	if res.Text != "done" || len(res.Progress) != 3 {
		t.Fatalf("progress: %q with %d notifications, want done with 3 (streamed as SSE events)", res.Text, len(res.Progress))
	}

	t.Run("token for another resource", func(t *testing.T) {
		other := peers.StartMCPClient(t)
		err := other.Connect(ctx, e.mcpURL, e.token(t, strangerID, "profile"))
		if !errors.As(err, &pe) || pe.Status != http.StatusUnauthorized {
			t.Fatalf("connect with a token for another resource: %v", err)
		}
	})
	t.Run("no token", func(t *testing.T) {
		other := peers.StartMCPClient(t)
		err := other.Connect(ctx, e.mcpURL, "")
		if !errors.As(err, &pe) || pe.Status != http.StatusUnauthorized {
			t.Fatalf("connect without a token: %v", err)
		}
	})
	t.Run("token in the query string", func(t *testing.T) {
		other := peers.StartMCPClient(t)
		err := other.Connect(ctx, e.mcpURL+"?access_token="+url.QueryEscape(tok), "")
		if !errors.As(err, &pe) || pe.Status != http.StatusBadRequest {
			t.Fatalf("connect with the token in the URL: %v", err)
		}
	})
	t.Run("missing scope", func(t *testing.T) {
		other := peers.StartMCPClient(t)
		err := other.Connect(ctx, e.mcpURL, e.token(t, agentID, "email"))
		if !errors.As(err, &pe) || pe.Status != http.StatusForbidden {
			t.Fatalf("connect with a token without the route's scope: %v", err)
		}
	})
}
