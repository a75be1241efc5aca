package bff

import (
	"bufio"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/bffgate/bffgate/bff/authz"
	"github.com/bffgate/bffgate/bff/proxy"
	"github.com/bffgate/bffgate/internal/testhttp"
	"github.com/bffgate/bffgate/issuer"
	issuerbolt "github.com/bffgate/bffgate/issuer/storage/bolt"
)

// The resources of the bearer routes in these tests: the issuer's
// clients are configured before the gateway listens, so the routes name
// their resource rather than deriving it from the gateway's URL.
const (
	mcpResource      = "https://gw.example/mcp"
	mcpIntroResource = "https://gw.example/mcpi"
	mcpXResource     = "https://gw.example/mcpx"
	agentID          = "agent"
	agentSecret      = "agent-secret-0123456789abcdef"
	strangerID       = "stranger"
)

// mcpUpstream is an MCP server stand-in: it records what reaches it and
// answers each JSON-RPC request with a result echoing the method, as
// JSON, or as an SSE stream of two events when the client accepts
// text/event-stream on /stream (the second event waits for release).
type mcpUpstream struct {
	srv     *httptest.Server
	mu      sync.Mutex
	auth    []string
	bodies  []string
	release chan struct{}
}

func newMCPUpstream(t testing.TB) *mcpUpstream {
	u := &mcpUpstream{release: make(chan struct{})}
	u.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		u.mu.Lock()
		u.auth = append(u.auth, r.Header.Get("Authorization"))
		u.bodies = append(u.bodies, string(body))
		u.mu.Unlock()
		var req struct {
			ID     json.RawMessage `json:"id"`
			Method string          `json:"method"`
		}
		_ = json.Unmarshal(body, &req)
		res, _ := json.Marshal(map[string]any{"jsonrpc": "2.0", "id": req.ID, "result": map[string]any{"method": req.Method}})
		if strings.HasSuffix(r.URL.Path, "/stream") && strings.Contains(r.Header.Get("Accept"), "text/event-stream") {
			w.Header().Set("Content-Type", "text/event-stream")
			w.WriteHeader(http.StatusOK)
			io.WriteString(w, "event: message\ndata: {\"jsonrpc\":\"2.0\",\"method\":\"notifications/progress\"}\n\n")
			w.(http.Flusher).Flush()
			select {
			case <-u.release:
			case <-time.After(10 * time.Second):
			}
			io.WriteString(w, "event: message\ndata: "+string(res)+"\n\n")
			return
		}
		w.Header().Set("Content-Type", "application/json")
		w.Header().Set("Mcp-Session-Id", "s-1")
		if got := r.Header.Get("Mcp-Session-Id"); got != "" {
			w.Header().Set("X-Seen-Session", got)
		}
		w.Write(res)
	}))
	t.Cleanup(u.srv.Close)
	return u
}

func (u *mcpUpstream) calls() int {
	u.mu.Lock()
	defer u.mu.Unlock()
	return len(u.auth)
}

func (u *mcpUpstream) lastAuth() string {
	u.mu.Lock()
	defer u.mu.Unlock()
	if len(u.auth) == 0 {
		return ""
	}
	return u.auth[len(u.auth)-1]
}

// mcpEnv is newEnv with the bearer routes: /mcp/ (client token
// upstream, scope profile, tools delete_* denied and admin_* needing
// roles), /mcpi/ (the same, introspecting), /mcpx/ (session or bearer,
// a token exchanged for orders-api upstream).
func mcpEnv(t testing.TB) (*env, *mcpUpstream, *ordersAPI) {
	return mcpEnvOn(t, kindBolt)
}

// mcpEnvOn is mcpEnv with the session store kind.
func mcpEnvOn(t testing.TB, kind storeKind) (*env, *mcpUpstream, *ordersAPI) {
	var orders *ordersAPI
	up := newMCPUpstream(t)
	ordersURL := make(chan string, 1)
	e := newEnv(t, kind, envOptions{
		issuer: func(c *issuer.Config) {
			c.Clients[0].TokenExchange = issuer.TokenExchange{Allowed: true, Audiences: []string{"orders-api"}}
			// The gateway's client is the resource server of the bearer
			// routes: it may introspect and exchange their tokens.
			c.Resources = []issuer.Resource{{URL: mcpResource}, {URL: mcpIntroResource}, {URL: mcpXResource}}
			c.Clients[0].Resources = []string{mcpResource, mcpIntroResource, mcpXResource}
			c.Clients = append(c.Clients,
				issuer.Client{ID: agentID, Secret: agentSecret, GrantTypes: []string{issuer.GrantClientCredentials},
					Audience: []string{mcpResource, mcpIntroResource, mcpXResource}},
				issuer.Client{ID: strangerID, Secret: agentSecret, GrantTypes: []string{issuer.GrantClientCredentials},
					Audience: []string{"https://elsewhere.example/mcp"}})
		},
		gateway: func(c *Config) {
			mcp := MCPConfig{Tools: MCPToolRules{Deny: []string{"delete_*"}, Scopes: map[string][]string{"admin_*": {"roles"}}}}
			c.Routes = append(c.Routes,
				Route{Route: proxy.Route{Prefix: "/mcp/", Upstream: up.srv.URL}, Policy: PolicyClient,
					Bearer: RouteBearer{Auth: []AuthMethod{AuthBearer}, Resource: mcpResource, Scopes: []string{"profile"}}, MCP: mcp},
				Route{Route: proxy.Route{Prefix: "/mcpi/", Upstream: up.srv.URL}, Policy: PolicyClient,
					Bearer: RouteBearer{Auth: []AuthMethod{AuthBearer}, Resource: mcpIntroResource, Scopes: []string{"profile"}, Introspect: true}, MCP: mcp},
				Route{Route: proxy.Route{Prefix: "/mcpx/", Upstream: <-ordersURL}, Policy: PolicyUser,
					Bearer: RouteBearer{Auth: []AuthMethod{AuthSession, AuthBearer}, Resource: mcpXResource},
					Token:  RouteToken{Exchange: RouteExchange{Audience: "orders-api", Actor: ActorGateway}}},
				Route{Route: proxy.Route{Prefix: "/smcp/", Upstream: up.srv.URL}, Policy: PolicyUser, MCP: mcp},
				Route{Route: proxy.Route{Prefix: "/root/", Upstream: up.srv.URL}, Policy: PolicyNone,
					Bearer: RouteBearer{Auth: []AuthMethod{AuthBearer}, Resource: "https://gw.example/"}},
			)
		},
		beforeGateway: func(e *env) {
			orders = newOrdersAPI(t, e.issuer, "orders-api", e.clock)
			ordersURL <- orders.srv.URL
		},
	})
	return e, up, orders
}

// clientToken gets a client_credentials token from issuerURL.
func clientToken(t testing.TB, issuerURL, id, scope string) string {
	t.Helper()
	form := url.Values{"grant_type": {"client_credentials"}, "scope": {scope}}
	req, _ := http.NewRequest(http.MethodPost, issuerURL+"/token", strings.NewReader(form.Encode()))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.SetBasicAuth(id, agentSecret)
	resp, err := testhttp.Client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var out struct {
		AccessToken string `json:"access_token"`
	}
	body, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK || json.Unmarshal(body, &out) != nil || out.AccessToken == "" {
		t.Fatalf("client_credentials for %s: %d %s", id, resp.StatusCode, body)
	}
	return out.AccessToken
}

type rpcResult struct {
	status int
	header http.Header
	body   string
}

// rpc posts a JSON-RPC body to path with token (none when "").
func (e *env) rpc(t *testing.T, path, token, body string, hdr map[string]string) rpcResult {
	t.Helper()
	req, _ := http.NewRequest(http.MethodPost, e.gwURL+path, strings.NewReader(body))
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Accept", "application/json, text/event-stream")
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	for k, v := range hdr {
		req.Header.Set(k, v)
	}
	resp, err := testhttp.Client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return rpcResult{status: resp.StatusCode, header: resp.Header, body: string(b)}
}

func toolCall(id int, name string) string {
	b, _ := json.Marshal(map[string]any{"jsonrpc": "2.0", "id": id, "method": "tools/call", "params": map[string]any{"name": name, "arguments": map[string]any{}}})
	return string(b)
}

// TestBearerRoute: bearer tokens on a route that takes them: accepted
// for the route's resource with its scope (the upstream gets the
// gateway's own token, never the caller's); refused with 401 and the
// RFC 9728 challenge when missing, expired, for another resource, from
// another issuer, forged, or revoked where the route introspects; 400
// in the query string; 403 insufficient_scope naming the scope.
func TestBearerRoute(t *testing.T) {
	t.Parallel()
	e, up, _ := mcpEnv(t)
	tok := clientToken(t, e.issuer, agentID, "profile")
	challenge := `Bearer resource_metadata="https://gw.example/.well-known/oauth-protected-resource/mcp", scope="profile"`

	r := e.rpc(t, "/mcp/", tok, toolCall(1, "search"), nil)
	if r.status != http.StatusOK || !strings.Contains(r.body, `"method":"tools/call"`) {
		t.Fatalf("tool call: %d %s", r.status, r.body)
	}
	if a := up.lastAuth(); a == "" || a == "Bearer "+tok {
		t.Fatalf("the upstream got %q: the caller's token must never be passed through", clip(a))
	} else {
		// The gateway's own client token: aud demo-api.
		claims := jwtPayload(t, strings.TrimPrefix(a, "Bearer "))
		if claims["client_id"] != testClientID {
			t.Fatalf("upstream token client_id %v, want the gateway's %s", claims["client_id"], testClientID)
		}
	}

	t.Run("missing", func(t *testing.T) {
		r := e.rpc(t, "/mcp/", "", toolCall(2, "search"), nil)
		if r.status != http.StatusUnauthorized || r.header.Get("WWW-Authenticate") != challenge {
			t.Fatalf("no token: %d %q %s", r.status, r.header.Get("WWW-Authenticate"), r.body)
		}
	})
	t.Run("query string", func(t *testing.T) {
		r := e.rpc(t, "/mcp/?access_token="+url.QueryEscape(tok), "", toolCall(3, "search"), nil)
		if r.status != http.StatusBadRequest || !strings.Contains(r.header.Get("WWW-Authenticate"), `error="invalid_request"`) {
			t.Fatalf("query token: %d %q %s", r.status, r.header.Get("WWW-Authenticate"), r.body)
		}
		if strings.Contains(r.body, tok) {
			t.Fatal("the answer repeats the token")
		}
	})
	t.Run("other resource", func(t *testing.T) {
		other := clientToken(t, e.issuer, strangerID, "profile")
		r := e.rpc(t, "/mcp/", other, toolCall(4, "search"), nil)
		if r.status != http.StatusUnauthorized || !strings.Contains(r.header.Get("WWW-Authenticate"), `error="invalid_token"`) {
			t.Fatalf("token for another resource: %d %q %s", r.status, r.header.Get("WWW-Authenticate"), r.body)
		}
		// A token for /mcp is not one for /mcpx either... it is: the
		// agent's tokens name all three. The stranger's names none.
		if r := e.rpc(t, "/mcpi/", other, toolCall(5, "search"), nil); r.status != http.StatusUnauthorized {
			t.Fatalf("token for another resource, introspected: %d %s", r.status, r.body)
		}
	})
	t.Run("forged", func(t *testing.T) {
		parts := strings.Split(tok, ".")
		forged := parts[0] + "." + parts[1] + "." + strings.Repeat("A", len(parts[2]))
		if r := e.rpc(t, "/mcp/", forged, toolCall(6, "search"), nil); r.status != http.StatusUnauthorized {
			t.Fatalf("forged signature: %d %s", r.status, r.body)
		}
		if r := e.rpc(t, "/mcp/", "opaque-token", toolCall(6, "search"), nil); r.status != http.StatusUnauthorized {
			t.Fatalf("opaque token without introspection: %d %s", r.status, r.body)
		}
	})
	t.Run("other issuer", func(t *testing.T) {
		// Another issuer with the same signing keys (the same store):
		// a valid signature, the wrong iss.
		istore, err := issuerbolt.New(e.db, issuerbolt.Config{})
		if err != nil {
			t.Fatal(err)
		}
		other, err := issuer.New(context.Background(), issuer.Config{Issuer: "http://other.example", Store: istore, Logger: quietLogger(),
			Clients: []issuer.Client{{ID: agentID, Secret: agentSecret, GrantTypes: []string{issuer.GrantClientCredentials}, Audience: []string{mcpResource}}}})
		if err != nil {
			t.Fatal(err)
		}
		form := url.Values{"grant_type": {"client_credentials"}, "scope": {"profile"}}
		req := httptest.NewRequest(http.MethodPost, "/token", strings.NewReader(form.Encode()))
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
		req.SetBasicAuth(agentID, agentSecret)
		resp, err := other.App().Test(req, 5000)
		if err != nil {
			t.Fatal(err)
		}
		var out struct {
			AccessToken string `json:"access_token"`
		}
		_ = json.NewDecoder(resp.Body).Decode(&out)
		if out.AccessToken == "" {
			t.Fatalf("other issuer: %d", resp.StatusCode)
		}
		if r := e.rpc(t, "/mcp/", out.AccessToken, toolCall(7, "search"), nil); r.status != http.StatusUnauthorized {
			t.Fatalf("token of another issuer: %d %s", r.status, r.body)
		}
	})
	t.Run("insufficient scope", func(t *testing.T) {
		weak := clientToken(t, e.issuer, agentID, "email")
		r := e.rpc(t, "/mcp/", weak, toolCall(8, "search"), nil)
		want := `Bearer resource_metadata="https://gw.example/.well-known/oauth-protected-resource/mcp", scope="email profile", error="insufficient_scope"`
		if r.status != http.StatusForbidden || !strings.HasPrefix(r.header.Get("WWW-Authenticate"), want) {
			t.Fatalf("missing route scope: %d %q %s", r.status, r.header.Get("WWW-Authenticate"), r.body)
		}
	})
	t.Run("revoked", func(t *testing.T) {
		tok := clientToken(t, e.issuer, agentID, "profile")
		if r := e.rpc(t, "/mcpi/", tok, toolCall(9, "search"), nil); r.status != http.StatusOK {
			t.Fatalf("introspected route: %d %s", r.status, r.body)
		}
		form := url.Values{"token": {tok}}
		req, _ := http.NewRequest(http.MethodPost, e.issuer+"/revoke", strings.NewReader(form.Encode()))
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
		req.SetBasicAuth(agentID, agentSecret)
		resp, err := testhttp.Client.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			t.Fatalf("revoke: %d", resp.StatusCode)
		}
		if r := e.rpc(t, "/mcpi/", tok, toolCall(10, "search"), nil); r.status != http.StatusUnauthorized ||
			!strings.Contains(r.header.Get("WWW-Authenticate"), `error="invalid_token"`) {
			t.Fatalf("revoked token on the introspecting route: %d %s", r.status, r.body)
		}
	})
	t.Run("expired", func(t *testing.T) {
		tok := clientToken(t, e.issuer, agentID, "profile")
		e.clock.Advance(24 * time.Hour)
		r := e.rpc(t, "/mcp/", tok, toolCall(11, "search"), nil)
		if r.status != http.StatusUnauthorized || !strings.Contains(r.header.Get("WWW-Authenticate"), `error="invalid_token"`) {
			t.Fatalf("expired token: %d %q %s", r.status, r.header.Get("WWW-Authenticate"), r.body)
		}
	})
}

func jwtPayload(t *testing.T, raw string) map[string]any {
	t.Helper()
	m, err := authz.JWTClaims(raw)
	if err != nil {
		t.Fatal(err)
	}
	return m
}

// TestBearerExchange: a bearer caller on a route with token.exchange:
// the upstream gets a token exchanged for its audience (act: the
// gateway), the caller's never; a session caller still works, with the
// CSRF header.
func TestBearerExchange(t *testing.T) {
	t.Parallel()
	for _, kind := range storeKinds {
		t.Run(string(kind), func(t *testing.T) {
			t.Parallel()
			e, _, orders := mcpEnvOn(t, kind)
			tok := clientToken(t, e.issuer, agentID, "profile")
			req, _ := http.NewRequest(http.MethodGet, e.gwURL+"/mcpx/orders", nil)
			req.Header.Set("Authorization", "Bearer "+tok)
			resp, err := testhttp.Client.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			body, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode != http.StatusOK {
				t.Fatalf("bearer on the exchange route: %d %s", resp.StatusCode, body)
			}
			var seen exchangedSeen
			if err := json.Unmarshal(body, &seen); err != nil {
				t.Fatal(err)
			}
			if len(seen.Aud) != 1 || seen.Aud[0] != "orders-api" || seen.Sub != issuer.ClientSubject(agentID) {
				t.Fatalf("exchanged token at the upstream: %+v", seen)
			}
			orders.mu.Lock()
			passed := orders.tokens[tok]
			orders.mu.Unlock()
			if passed {
				t.Fatal("the caller's token reached the upstream")
			}
			b := e.browser()
			b.mustLogin("alice", alicePassword)
			if r := b.api(http.MethodGet, "/mcpx/orders"); r.status != http.StatusOK {
				t.Fatalf("session on the mixed route: %d %s", r.status, clip(r.body))
			}
			// A token revoked before its first call passes the local
			// check (a valid JWT) but not the exchange: the provider
			// refuses the subject token, and the caller gets 401
			// invalid_token, not a 403.
			revoked := clientToken(t, e.issuer, agentID, "profile")
			form := url.Values{"token": {revoked}}
			rreq, _ := http.NewRequest(http.MethodPost, e.issuer+"/revoke", strings.NewReader(form.Encode()))
			rreq.Header.Set("Content-Type", "application/x-www-form-urlencoded")
			rreq.SetBasicAuth(agentID, agentSecret)
			if rresp, err := testhttp.Client.Do(rreq); err != nil || rresp.StatusCode != http.StatusOK {
				t.Fatalf("revoke: %v", err)
			} else {
				rresp.Body.Close()
			}
			req, _ = http.NewRequest(http.MethodGet, e.gwURL+"/mcpx/orders", nil)
			req.Header.Set("Authorization", "Bearer "+revoked)
			resp, err = testhttp.Client.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			body, _ = io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode != http.StatusUnauthorized || !strings.Contains(resp.Header.Get("WWW-Authenticate"), `error="invalid_token"`) {
				t.Fatalf("revoked subject token on the exchange route: %d %q %s", resp.StatusCode, resp.Header.Get("WWW-Authenticate"), body)
			}

			// Without credentials, the mixed route answers the SPA's 401 with
			// the challenge for agents.
			r := e.rpc(t, "/mcpx/", "", "{}", nil)
			if r.status != http.StatusUnauthorized || !strings.Contains(r.body, "login_url") ||
				!strings.HasPrefix(r.header.Get("WWW-Authenticate"), `Bearer resource_metadata="https://gw.example/.well-known/oauth-protected-resource/mcpx"`) {
				t.Fatalf("no credentials on the mixed route: %d %q %s", r.status, r.header.Get("WWW-Authenticate"), r.body)
			}
		})
	}
}

// TestProtectedResourceMetadata: RFC 9728 §3 documents at the path of
// each bearer route's resource; none elsewhere.
func TestProtectedResourceMetadata(t *testing.T) {
	t.Parallel()
	e, _, _ := mcpEnv(t)
	resp, err := testhttp.Client.Get(e.gwURL + "/.well-known/oauth-protected-resource/mcp")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var doc map[string]any
	if err := json.NewDecoder(resp.Body).Decode(&doc); err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("metadata: %d %v", resp.StatusCode, err)
	}
	want := map[string]any{"resource": mcpResource, "authorization_servers": []any{e.issuer},
		"scopes_supported": []any{"profile", "roles"}, "bearer_methods_supported": []any{"header"}}
	gotJSON, _ := json.Marshal(doc)
	wantJSON, _ := json.Marshal(want)
	if string(gotJSON) != string(wantJSON) {
		t.Fatalf("metadata %s, want %s", gotJSON, wantJSON)
	}
	root, err := testhttp.Client.Get(e.gwURL + "/.well-known/oauth-protected-resource")
	if err != nil {
		t.Fatal(err)
	}
	doc = nil
	_ = json.NewDecoder(root.Body).Decode(&doc)
	root.Body.Close()
	if root.StatusCode != http.StatusOK || doc["resource"] != "https://gw.example/" {
		t.Fatalf("root metadata: %d %v", root.StatusCode, doc)
	}
	resp2, err := testhttp.Client.Get(e.gwURL + "/.well-known/oauth-protected-resource/api")
	if err != nil {
		t.Fatal(err)
	}
	resp2.Body.Close()
	if resp2.StatusCode != http.StatusNotFound {
		t.Fatalf("metadata of a session route: %d, want 404", resp2.StatusCode)
	}
}

// TestMCPToolPolicy: tools/call decided by name: a denied tool is a
// JSON-RPC error echoing the id (the server never sees it), a tool that
// needs a scope the token lacks is 403 insufficient_scope naming it
// (step-up), Mcp-Method and Mcp-Name must agree with the body, batches
// and non-JSON bodies are refused; other methods pass.
func TestMCPToolPolicy(t *testing.T) {
	t.Parallel()
	e, up, _ := mcpEnv(t)
	tok := clientToken(t, e.issuer, agentID, "profile")

	before := up.calls()
	r := e.rpc(t, "/mcp/", tok, toolCall(41, "delete_everything"), nil)
	if r.status != http.StatusOK || !strings.Contains(r.body, `"id":41`) || !strings.Contains(r.body, `"code":-32003`) {
		t.Fatalf("denied tool: %d %s", r.status, r.body)
	}
	if up.calls() != before {
		t.Fatal("the denied call reached the MCP server")
	}
	if n := e.gatewayCount("bffgate_gateway_mcp_calls_total", map[string]string{"route": "/mcp/", "method": "tools/call", "decision": "denied"}); n != 1 {
		t.Fatalf("mcp_calls_total denied = %v, want 1", n)
	}
	r = e.rpc(t, "/mcp/", tok, toolCall(42, "admin_reset"), nil)
	if r.status != http.StatusForbidden || !strings.Contains(r.header.Get("WWW-Authenticate"), `scope="profile roles", error="insufficient_scope"`) {
		t.Fatalf("tool needing roles: %d %q %s", r.status, r.header.Get("WWW-Authenticate"), r.body)
	}
	strong := clientToken(t, e.issuer, agentID, "profile roles")
	if r := e.rpc(t, "/mcp/", strong, toolCall(43, "admin_reset"), nil); r.status != http.StatusOK || !strings.Contains(r.body, `"result"`) {
		t.Fatalf("tool with its scope: %d %s", r.status, r.body)
	}
	r = e.rpc(t, "/mcp/", tok, `{"jsonrpc":"2.0","id":"a","method":"tools/list"}`, map[string]string{"Mcp-Session-Id": "s-1"})
	if r.status != http.StatusOK || !strings.Contains(r.body, `"method":"tools/list"`) {
		t.Fatalf("tools/list: %d %s", r.status, r.body)
	}
	if r.header.Get("Mcp-Session-Id") != "s-1" || r.header.Get("X-Seen-Session") != "s-1" {
		t.Fatalf("Mcp-Session-Id did not pass both ways: %v", r.header)
	}
	for _, tc := range []struct {
		name, body string
		hdr        map[string]string
		status     int
		want       string
	}{
		{"method header mismatch", toolCall(44, "search"), map[string]string{"Mcp-Method": "tools/list"}, 400, `"code":-32600`},
		{"name header mismatch", toolCall(45, "search"), map[string]string{"Mcp-Method": "tools/call", "Mcp-Name": "delete_everything"}, 400, `"id":45`},
		{"headers agree", toolCall(46, "search"), map[string]string{"Mcp-Method": "tools/call", "Mcp-Name": "search"}, 200, `"result"`},
		{"base64 name", toolCall(47, "search"), map[string]string{"Mcp-Method": "tools/call", "Mcp-Name": "=?base64?c2VhcmNo?="}, 200, `"result"`},
		{"denied through headers too", toolCall(48, "delete_x"), map[string]string{"Mcp-Method": "tools/call", "Mcp-Name": "delete_x"}, 200, `"code":-32003`},
		{"batch", "[" + toolCall(49, "search") + "]", nil, 400, "batches"},
		{"not json", "{", nil, 400, `"code":-32700`},
		{"compressed", toolCall(50, "search"), map[string]string{"Content-Encoding": "gzip"}, 415, "unsupported_encoding"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := e.rpc(t, "/mcp/", tok, tc.body, tc.hdr)
			if r.status != tc.status || !strings.Contains(r.body, tc.want) {
				t.Fatalf("%d %s, want %d with %s", r.status, r.body, tc.status, tc.want)
			}
		})
	}
}

// TestMCPSessionRoute: an MCP route without bearer: the tool policy
// applies to session callers too, after the CSRF rule.
func TestMCPSessionRoute(t *testing.T) {
	t.Parallel()
	for _, kind := range storeKinds {
		t.Run(string(kind), func(t *testing.T) {
			t.Parallel()
			e, up, _ := mcpEnvOn(t, kind)
			b := e.browser()
			b.mustLogin("alice", alicePassword)
			post := func(body string, csrf bool) result {
				hdr := map[string]string{"Content-Type": "application/json", "Cookie": b.cookieHeader()}
				if csrf {
					hdr["X-CSRF"] = "1"
				}
				return b.do(testhttp.Client, http.MethodPost, e.gwURL+"/smcp/", strings.NewReader(body), hdr)
			}
			if r := post(toolCall(61, "search"), false); r.status != http.StatusForbidden {
				t.Fatalf("without the CSRF header: %d %s", r.status, clip(r.body))
			}
			before := up.calls()
			if r := post(toolCall(62, "delete_repo"), true); r.status != http.StatusOK || !strings.Contains(r.body, `"code":-32003`) || up.calls() != before {
				t.Fatalf("denied tool for a session: %d %s", r.status, clip(r.body))
			}
			if r := post(toolCall(63, "admin_reset"), true); r.status != http.StatusOK || !strings.Contains(r.body, `"result"`) {
				// Tool scopes are a bearer token's; a session has none to check.
				t.Fatalf("tool with scopes for a session: %d %s", r.status, clip(r.body))
			}
			if a := up.lastAuth(); a != "Bearer "+b.session().AccessToken {
				t.Fatalf("the session route sent %q upstream, want the session's token", clip(a))
			}
		})
	}
}

// TestMCPChunkedBody: a JSON-RPC body of unknown length (chunked) is
// read, decided and sent on whole.
func TestMCPChunkedBody(t *testing.T) {
	t.Parallel()
	e, up, _ := mcpEnv(t)
	tok := clientToken(t, e.issuer, agentID, "profile")
	for _, tc := range []struct{ tool, want string }{{"search", `"result"`}, {"delete_repo", `"code":-32003`}} {
		pr, pw := io.Pipe()
		go func() {
			body := toolCall(71, tc.tool)
			io.WriteString(pw, body[:10])
			time.Sleep(10 * time.Millisecond)
			io.WriteString(pw, body[10:])
			pw.Close()
		}()
		req, _ := http.NewRequest(http.MethodPost, e.gwURL+"/mcp/", pr)
		req.Header.Set("Content-Type", "application/json")
		req.Header.Set("Authorization", "Bearer "+tok)
		resp, err := testhttp.Client.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK || !strings.Contains(string(body), tc.want) {
			t.Fatalf("chunked %s: %d %s", tc.tool, resp.StatusCode, body)
		}
	}
	up.mu.Lock()
	last := up.bodies[len(up.bodies)-1]
	up.mu.Unlock()
	if last != toolCall(71, "search") {
		t.Fatalf("the server got %q", last)
	}
}

// TestMCPStreaming: a Streamable HTTP answer (SSE) reaches the client
// event by event: the first event arrives while the server still holds
// the second.
func TestMCPStreaming(t *testing.T) {
	t.Parallel()
	e, up, _ := mcpEnv(t)
	tok := clientToken(t, e.issuer, agentID, "profile")
	req, _ := http.NewRequest(http.MethodPost, e.gwURL+"/mcp/stream", strings.NewReader(toolCall(51, "search")))
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Accept", "application/json, text/event-stream")
	req.Header.Set("Authorization", "Bearer "+tok)
	resp, err := testhttp.Client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK || !strings.HasPrefix(resp.Header.Get("Content-Type"), "text/event-stream") {
		t.Fatalf("stream: %d %s", resp.StatusCode, resp.Header.Get("Content-Type"))
	}
	rd := bufio.NewReader(resp.Body)
	readEvent := func() string {
		var ev strings.Builder
		for {
			line, err := rd.ReadString('\n')
			if err != nil {
				t.Fatalf("reading the stream: %v (so far %q)", err, ev.String())
			}
			if line == "\n" {
				return ev.String()
			}
			ev.WriteString(line)
		}
	}
	if ev := readEvent(); !strings.Contains(ev, "notifications/progress") {
		t.Fatalf("first event %q", ev)
	}
	close(up.release) // only now may the server send the second
	if ev := readEvent(); !strings.Contains(ev, `"id":51`) {
		t.Fatalf("second event %q", ev)
	}
}

// gatewayCount sums the gateway's counter name over the series with
// labels.
func (e *env) gatewayCount(name string, labels map[string]string) float64 {
	e.t.Helper()
	mfs, err := e.reg.Gather()
	if err != nil {
		e.t.Fatal(err)
	}
	var sum float64
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
		for _, m := range mf.GetMetric() {
			have := map[string]string{}
			for _, lp := range m.GetLabel() {
				have[lp.GetName()] = lp.GetValue()
			}
			match := true
			for k, v := range labels {
				match = match && have[k] == v
			}
			if match {
				sum += m.GetCounter().GetValue()
			}
		}
	}
	return sum
}
