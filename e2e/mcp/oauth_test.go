package mcp

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"net/http"
	"net/http/cookiejar"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/bffgate/bffgate/e2e/issuerclient"
	"github.com/bffgate/bffgate/e2e/peers"
	"github.com/bffgate/bffgate/e2e/stack"
	"github.com/bffgate/bffgate/internal/testhttp"
)

const (
	// demoHash is the argon2id hash of the password "demo".
	demoHash    = "$argon2id$v=19$m=65536,t=3,p=4$+ls2TPbBTnDx8LLW5C1tkQ$+uJtJyaHr8paY7LZ+BJPwnUvyOiKa3P/ygn9o7GwhL0"
	redirectURI = "http://127.0.0.1:33418/callback" // a desktop client's loopback listener; never dialled
)

// oauthEnv is the binary as both halves of MCP authorization: the issuer
// with a registered resource (the gateway's MCP route), dynamic
// registration and client ID metadata documents, and the gateway's MCP
// route in front of the SDK's server. The CIMD document is served over
// https by the test (a certificate bffgate trusts through SSL_CERT_FILE).
type oauthEnv struct {
	st       *stack.Stack
	server   *peers.MCPServer
	mcpURL   string
	cimdURL  string
	cimdSeen chan struct{}
}

func newOAuthEnv(t *testing.T) *oauthEnv {
	t.Helper()
	peers.NodeModules(t)
	e := &oauthEnv{server: peers.StartMCPServer(t), cimdSeen: make(chan struct{}, 16)}
	cimd := httptest.NewTLSServer(nil)
	cimd.Config.Handler = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		select {
		case e.cimdSeen <- struct{}{}:
		default:
		}
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(map[string]any{
			"client_id": cimd.URL + "/agent.json", "client_name": "CIMD agent",
			"redirect_uris": []string{redirectURI}, "grant_types": []string{"authorization_code", "refresh_token"},
			"response_types": []string{"code"}, "token_endpoint_auth_method": "none",
		})
	})
	t.Cleanup(cimd.Close)
	e.cimdURL = cimd.URL + "/agent.json"
	roots := filepath.Join(t.TempDir(), "roots.pem")
	if err := os.WriteFile(roots, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: cimd.Certificate().Raw}), 0o600); err != nil {
		t.Fatal(err)
	}
	port := stack.FreePort(t)
	gw := fmt.Sprintf("http://127.0.0.1:%d", port)
	e.mcpURL = gw + "/mcp"
	// No issuer.resources: the embedded issuer takes the route's
	// resource (and its mcp: scopes) from the gateway's configuration, and
	// lets the gateway's client introspect tokens for it.
	yaml := fmt.Sprintf(`issuer:
  registration:
    enabled: true
  client_metadata:
    enabled: true
    insecure_allow_private_addresses: true
  users:
    - username: demo
      password_hash: "%[1]s"
      subject: demo-user-1
gateway:
  routes:
    - prefix: /mcp/
      upstream: %[2]s
      policy: client
      auth: [bearer]
      scopes: [mcp:tools]
      introspect: true
      mcp:
        tools:
          deny: [delete_*]
          scopes: {admin_*: [mcp:admin]}
`, demoHash, e.server.URL)
	e.st = stack.Start(t, stack.Options{ConfigYAML: yaml, GatewayPort: port, Env: []string{"SSL_CERT_FILE=" + roots}})
	return e
}

// authorize plays the user at the issuer: it follows authURL through the
// login form (demo/demo) and the consent page (allow), and returns the
// code of the redirect to redirectURI. consented counts consent pages.
func authorize(ctx context.Context, t *testing.T, jar http.CookieJar, authURL string) (code string, consented int) {
	t.Helper()
	c := &http.Client{Jar: jar, Timeout: 10 * time.Second,
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	next, method, form := authURL, http.MethodGet, url.Values(nil)
	for range 10 {
		var body *strings.Reader
		if form != nil {
			body = strings.NewReader(form.Encode())
		} else {
			body = strings.NewReader("")
		}
		req, err := http.NewRequestWithContext(ctx, method, next, body)
		if err != nil {
			t.Fatal(err)
		}
		if form != nil {
			req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
		}
		resp, err := c.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		page := new(strings.Builder)
		_, _ = fmt.Fprint(page, readAll(resp))
		switch {
		case resp.StatusCode/100 == 3:
			loc, err := req.URL.Parse(resp.Header.Get("Location"))
			if err != nil {
				t.Fatalf("Location: %v", err)
			}
			if strings.HasPrefix(loc.String(), redirectURI+"?") {
				q := loc.Query()
				if q.Get("code") == "" {
					t.Fatalf("authorization ended with error %q: %s", q.Get("error"), q.Get("error_description"))
				}
				return q.Get("code"), consented
			}
			next, method, form = loc.String(), http.MethodGet, nil
		case resp.StatusCode == http.StatusOK && strings.Contains(page.String(), `name="password"`):
			f, err := issuerclient.ParseForm(page.String())
			if err != nil {
				t.Fatal(err)
			}
			target, _ := req.URL.Parse(f.Action)
			f.Fields.Set("username", "demo")
			f.Fields.Set("password", "demo")
			next, method, form = target.String(), http.MethodPost, f.Fields
		case resp.StatusCode == http.StatusOK && strings.Contains(page.String(), `name="decision"`):
			consented++
			f, err := issuerclient.ParseForm(page.String())
			if err != nil {
				t.Fatal(err)
			}
			target, _ := req.URL.Parse(f.Action)
			f.Fields.Set("decision", "allow")
			next, method, form = target.String(), http.MethodPost, f.Fields
		default:
			t.Fatalf("authorization stopped at %s %s: %d %s", req.Method, req.URL.Path, resp.StatusCode, clip(page.String()))
		}
	}
	t.Fatal("authorization: too many steps")
	return "", 0
}

func readAll(resp *http.Response) string {
	defer resp.Body.Close()
	var b strings.Builder
	buf := make([]byte, 32<<10)
	for {
		n, err := resp.Body.Read(buf)
		b.Write(buf[:n])
		if err != nil {
			return b.String()
		}
	}
}

func clip(s string) string {
	if len(s) > 600 {
		return s[:600] + "..."
	}
	return s
}

// claims reads a JWT's payload without verifying it (the gateway did).
func claims(t *testing.T, tok any) map[string]any {
	t.Helper()
	s, _ := tok.(string)
	parts := strings.Split(s, ".")
	if len(parts) != 3 {
		t.Fatalf("not a JWT: %d parts", len(parts))
	}
	var m map[string]any
	b, err := decodeSegment(parts[1])
	if err != nil || json.Unmarshal(b, &m) != nil {
		t.Fatalf("payload: %v", err)
	}
	return m
}

// TestSDKOAuthFlow: the SDK client's own OAuth flow against bffgate, one
// run with dynamic registration and one with a client ID metadata
// document: discovery from the gateway's 401 (resource metadata, the
// issuer's RFC 8414 metadata), registration, the login and consent
// pages, the code exchanged with the resource (the token's aud is the
// route), a tool call, a denied tool, a refresh after the access token
// is refused, and step-up for a tool that needs mcp:admin.
func TestSDKOAuthFlow(t *testing.T) {
	e := newOAuthEnv(t)
	for _, tc := range []struct {
		name, cimd string
	}{{"dcr", ""}, {"cimd", e.cimdURL}} {
		t.Run(tc.name, func(t *testing.T) {
			ctx := ctxT(t)
			jar, _ := cookiejar.New(nil)
			c := peers.StartMCPClient(t)
			step, err := c.OAuthConnect(ctx, peers.OAuthOptions{URL: e.mcpURL, RedirectURI: redirectURI, ClientMetadataURL: tc.cimd})
			if err != nil {
				t.Fatalf("connect: %v\n%s", err, e.st.Logs())
			}
			if step.AuthorizationURL == "" {
				t.Fatalf("no authorization asked for: %+v", step)
			}
			au, _ := url.Parse(step.AuthorizationURL)
			q := au.Query()
			if q.Get("resource") != e.mcpURL || q.Get("code_challenge_method") != "S256" || !strings.Contains(q.Get("scope"), "mcp:tools") {
				t.Fatalf("authorization request: resource %q, challenge method %q, scope %q", q.Get("resource"), q.Get("code_challenge_method"), q.Get("scope"))
			}
			st, err := c.OAuthState(ctx)
			if err != nil {
				t.Fatal(err)
			}
			switch tc.cimd {
			case "":
				if id, _ := st.Client["client_id"].(string); !strings.HasPrefix(id, "dyn_") {
					t.Fatalf("dynamic registration gave client %v", st.Client)
				}
			default:
				if st.Client["client_id"] != tc.cimd {
					t.Fatalf("client id %v, want the metadata document URL", st.Client["client_id"])
				}
			}
			code, consents := authorize(ctx, t, jar, step.AuthorizationURL)
			if consents != 1 {
				t.Fatalf("%d consent pages, want 1 (a third-party client)", consents)
			}
			if tc.cimd != "" && len(e.cimdSeen) == 0 {
				t.Fatal("the issuer never fetched the client ID metadata document")
			}
			if step, err = c.OAuthFinish(ctx, code); err != nil || !step.Connected {
				t.Fatalf("finish: %+v %v\n%s", step, err, e.st.Logs())
			}
			st, _ = c.OAuthState(ctx)
			at := claims(t, st.Tokens["access_token"])
			if aud, _ := at["aud"].([]any); len(aud) == 0 || aud[0] != e.mcpURL {
				if at["aud"] != e.mcpURL {
					t.Fatalf("token aud %v, want the route's resource %s", at["aud"], e.mcpURL)
				}
			}
			refresh1, _ := st.Tokens["refresh_token"].(string)

			if step, err = c.OAuthCall(ctx, "whoami"); err != nil || !strings.Contains(step.Text, `"client_id":"bffgate"`) {
				t.Fatalf("whoami: %+v %v", step, err)
			}
			_, err = c.OAuthCall(ctx, "delete_repo")
			var pe *peers.PeerError
			if !errors.As(err, &pe) || pe.Code != mcpDeniedCode {
				t.Fatalf("denied tool: %v", err)
			}

			// Refresh: the access token refused (401), the SDK refreshes
			// with the resource and calls again.
			if refresh1 == "" {
				t.Fatal("no refresh token")
			}
			if err := c.OAuthSpoilAccess(ctx); err != nil {
				t.Fatal(err)
			}
			if step, err = c.OAuthCall(ctx, "whoami"); err != nil || step.AuthorizationURL != "" || step.Text == "" {
				t.Fatalf("call after the access token was refused: %+v %v", step, err)
			}
			st, _ = c.OAuthState(ctx)
			if st.Tokens["refresh_token"] == refresh1 || st.Tokens["access_token"] == "spoiled" {
				t.Fatal("the SDK did not refresh (rotated refresh token, new access token)")
			}

			// Step-up: admin_stats needs mcp:admin; the SDK asks for the
			// 403's scope in a new authorization, the user consents again.
			step, err = c.OAuthCall(ctx, "admin_stats")
			if errors.As(err, &pe) && pe.Status == http.StatusForbidden {
				// SDK 1.32 tries a refresh first when it holds a refresh
				// token, which cannot widen the scope, and gives up on
				// the same 403. A client then authorizes again: drop
				// the refresh token, call something that works (the SDK
				// forgets its last step-up), and call again.
				t.Logf("SDK step-up with a refresh token: %v", err)
				if err := c.OAuthDropRefresh(ctx); err != nil {
					t.Fatal(err)
				}
				if _, err := c.OAuthCall(ctx, "whoami"); err != nil {
					t.Fatal(err)
				}
				step, err = c.OAuthCall(ctx, "admin_stats")
			}
			if err != nil || step.AuthorizationURL == "" {
				t.Fatalf("step-up: %+v %v", step, err)
			}
			su, _ := url.Parse(step.AuthorizationURL)
			if s := su.Query().Get("scope"); !strings.Contains(s, "mcp:admin") || !strings.Contains(s, "mcp:tools") {
				t.Fatalf("step-up asks for %q, want mcp:tools and mcp:admin", s)
			}
			code, consents = authorize(ctx, t, jar, step.AuthorizationURL)
			if consents != 1 {
				t.Fatalf("%d consent pages for the wider scope, want 1", consents)
			}
			if step, err = c.OAuthFinish(ctx, code); err != nil || !step.Connected {
				t.Fatalf("finish the step-up: %+v %v", step, err)
			}
			if step, err = c.OAuthCall(ctx, "admin_stats"); err != nil || step.Text != "stats" {
				t.Fatalf("admin_stats after step-up: %+v %v", step, err)
			}

			// Revocation: the client's refresh token revoked at the
			// issuer (RFC 7009) ends the grant; the route introspects,
			// so the next call is a 401 at once and the SDK's refresh is
			// refused (SDK 1.32 raises the invalid_grant; the client
			// drops its tokens and authorizes again).
			st, _ = c.OAuthState(ctx)
			clientID, _ := st.Client["client_id"].(string)
			rt, _ := st.Tokens["refresh_token"].(string)
			form := url.Values{"token": {rt}, "token_type_hint": {"refresh_token"}, "client_id": {clientID}}
			resp, err := testhttp.Client.PostForm(e.st.IssuerURL+"/revoke", form)
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			if resp.StatusCode != http.StatusOK {
				t.Fatalf("revoke: %d", resp.StatusCode)
			}
			_, err = c.OAuthCall(ctx, "whoami")
			if !errors.As(err, &pe) || pe.Name != "InvalidGrantError" {
				t.Fatalf("call after the grant was revoked: %v, want the refused refresh", err)
			}
			if err := c.OAuthForget(ctx); err != nil {
				t.Fatal(err)
			}
			if step, err = c.OAuthCall(ctx, "whoami"); err != nil || step.AuthorizationURL == "" {
				t.Fatalf("call without tokens: %+v %v, want a new authorization", step, err)
			}
		})
	}
}

func decodeSegment(s string) ([]byte, error) { return base64.RawURLEncoding.DecodeString(s) }
