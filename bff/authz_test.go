package bff

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/fasthttp/websocket"

	"github.com/bffgate/bffgate/bff/authz"
	"github.com/bffgate/bffgate/bff/proxy"
	"github.com/bffgate/bffgate/issuer"
)

// logBuffer is a slog destination the test reads while the gateway
// writes.
type logBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *logBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

// lines returns the JSON log lines with msg.
func (l *logBuffer) lines(msg string) []map[string]any {
	l.mu.Lock()
	defer l.mu.Unlock()
	var out []map[string]any
	for _, line := range strings.Split(l.b.String(), "\n") {
		var m map[string]any
		if json.Unmarshal([]byte(line), &m) == nil && m["msg"] == msg {
			out = append(out, m)
		}
	}
	return out
}

// authzEnv is the fixture with users carrying groups and roles at the
// embedded issuer (released with the groups and roles scopes, which the
// gateway asks for) and routes with rules.
func authzEnv(t *testing.T, extra ...Route) (*env, *logBuffer) {
	logs := &logBuffer{}
	rule := func(prefix string, p authz.Policy, policy Policy) Route {
		return Route{Route: proxy.Route{Prefix: prefix}, Policy: policy, Rules: p}
	}
	routes := []Route{
		rule("/r/groups/", authz.Policy{Allow: []authz.Rule{{Groups: []string{"admin"}}}}, PolicyUser),
		rule("/r/roles/", authz.Policy{Allow: []authz.Rule{{Roles: []string{"editor"}}}}, PolicyUser),
		rule("/r/domain/", authz.Policy{Allow: []authz.Rule{{EmailDomains: []string{"example.test"}}}}, PolicyUser),
		rule("/r/emails/", authz.Policy{Allow: []authz.Rule{{Emails: []string{"bob@other.test"}}}}, PolicyUser),
		rule("/r/claims/", authz.Policy{Allow: []authz.Rule{{Claims: map[string][]string{"name": {"Bob Example"}}}}}, PolicyUser),
		rule("/r/cel/", authz.Policy{Allow: []authz.Rule{{CEL: `"dev" in claims.groups && request.method == "GET" && !request.path.startsWith("/r/cel/private")`}}}, PolicyUser),
		rule("/r/celerr/", authz.Policy{Allow: []authz.Rule{{CEL: `claims.department == "ops"`}}}, PolicyUser),
		rule("/r/wrongtype/", authz.Policy{Allow: []authz.Rule{{CEL: `"admin" in claims.name`}, {Groups: []string{"admin"}}}}, PolicyUser),
		rule("/r/deny/", authz.Policy{Deny: []authz.Rule{{Groups: []string{"dev"}}}}, PolicyUser),
		rule("/r/idtoken/", authz.Policy{ClaimsFrom: authz.SourceIDToken, Allow: []authz.Rule{{Groups: []string{"admin"}}}}, PolicyUser),
		rule("/r/access/", authz.Policy{ClaimsFrom: authz.SourceAccessToken, Allow: []authz.Rule{{CEL: `"editor" in claims.roles && claims.sub == "user-alice"`}}}, PolicyUser),
		rule("/r/optional/", authz.Policy{Allow: []authz.Rule{{Groups: []string{"admin"}}}}, PolicyUserOptional),
	}
	routes = append(routes, extra...)
	e := newEnv(t, kindBolt, envOptions{
		issuer: func(c *issuer.Config) {
			c.Users[0].Claims = map[string]any{"name": "Alice Example", "email": "alice@example.test", "email_verified": true}
			c.Users[0].Groups = []string{"admin", "dev"}
			c.Users[0].Roles = []string{"editor"}
			c.Users[1].Claims = map[string]any{"name": "Bob Example", "email": "bob@other.test", "email_verified": true}
			c.Users[1].Groups = []string{"staff"}
		},
		gateway: func(c *Config) {
			c.Provider.Scopes = []string{"openid", "profile", "email", "offline_access", "groups", "roles"}
			c.Logger = slog.New(slog.NewJSONHandler(logs, &slog.HandlerOptions{Level: slog.LevelInfo}))
			up := c.Routes[0].Upstream
			for _, r := range routes {
				if r.Upstream == "" {
					r.Upstream = up
				}
				c.Routes = append(c.Routes, r)
			}
		},
	})
	return e, logs
}

// TestAuthorizationRules: each shorthand and CEL rule over real HTTP, with
// the claims the embedded issuer released (groups and roles by their
// scopes): allowed calls reach the upstream, denied ones are 403
// {"error":"forbidden"} and nothing more, with the rule in the log; a
// rule failing at run time (a missing claim, a claim of another type)
// denies.
func TestAuthorizationRules(t *testing.T) {
	t.Parallel()
	e, logs := authzEnv(t)
	alice, bob := e.browser(), e.browser()
	alice.mustLogin("alice", alicePassword)
	bob.mustLogin("bob", bobPassword)

	for _, tc := range []struct {
		name, method, path string
		alice, bob         int
	}{
		{"groups", "GET", "/r/groups/x", 200, 403},
		{"roles", "GET", "/r/roles/x", 200, 403},
		{"email_domains", "GET", "/r/domain/x", 200, 403},
		{"emails", "GET", "/r/emails/x", 403, 200},
		{"claims", "GET", "/r/claims/x", 403, 200},
		{"cel allowed", "GET", "/r/cel/x", 200, 403},
		{"cel method", "POST", "/r/cel/x", 403, 403},
		{"cel path", "GET", "/r/cel/private/x", 403, 403},
		{"cel encoded path", "GET", "/r/cel/%70rivate/x", 403, 403},
		{"cel runtime error", "GET", "/r/celerr/x", 403, 403},
		{"cel wrong claim type", "GET", "/r/wrongtype/x", 200, 403},
		{"deny", "GET", "/r/deny/x", 403, 200},
		{"id_token claims", "GET", "/r/idtoken/x", 200, 403},
		{"access token claims", "GET", "/r/access/x", 200, 403},
		{"no rules", "GET", "/api/x", 200, 200},
	} {
		for _, u := range []struct {
			name string
			b    *browser
			want int
		}{{"alice", alice, tc.alice}, {"bob", bob, tc.bob}} {
			r := u.b.api(tc.method, tc.path)
			if r.status != u.want {
				t.Errorf("%s: %s %s %s = %d %s, want %d", tc.name, u.name, tc.method, tc.path, r.status, clip(r.body), u.want)
				continue
			}
			if r.status == 403 && strings.TrimSpace(r.body) != `{"error":"forbidden"}` {
				t.Errorf("%s: %s: 403 body %s, want {\"error\":\"forbidden\"} only", tc.name, u.name, r.body)
			}
			if r.status == 200 && !strings.Contains(r.body, `"Bearer":true`) {
				t.Errorf("%s: %s: the upstream saw no token: %s", tc.name, u.name, r.body)
			}
		}
	}

	// The log names the route, the subject and the rule, and the runtime
	// error of a rule that failed.
	var sawErr, sawDeny bool
	for _, l := range logs.lines("request forbidden by the route's rules") {
		if l["route"] == "/r/celerr/" && l["sub"] == "user-alice" && l["rule"] == "allow" && strings.Contains(l["err"].(string), "department") {
			sawErr = true
		}
		if l["route"] == "/r/deny/" && l["sub"] == "user-alice" && l["rule"] == "deny[0]" && l["condition"] == "groups: [dev]" {
			sawDeny = true
		}
	}
	if !sawErr || !sawDeny {
		t.Errorf("log lines lack the denials (runtime error %v, deny rule %v): %v", sawErr, sawDeny, logs.lines("request forbidden by the route's rules"))
	}
	if n := e.gwCount("bffgate_gateway_authz_decisions_total", map[string]string{"route": "/r/celerr/", "result": "error"}); n != 2 {
		t.Errorf("decisions{route=/r/celerr/,result=error} = %v, want 2", n)
	}

	// user-optional: anonymous is asked to log in; alice passes.
	anon := e.browser()
	if r := anon.api("GET", "/r/optional/x"); r.status != 401 || !strings.Contains(r.body, "login_required") {
		t.Errorf("anonymous on user-optional with rules: %d %s, want 401 login_required", r.status, r.body)
	}
	if r := alice.api("GET", "/r/optional/x"); r.status != 200 {
		t.Errorf("alice on user-optional: %d %s", r.status, r.body)
	}
}

// TestAuthorizationWebSocket: a WebSocket upgrade through a route with
// rules is denied (403, the upstream never dialled) for a user the rules
// refuse, and tunnelled for one they allow.
func TestAuthorizationWebSocket(t *testing.T) {
	t.Parallel()
	var ep atomic.Pointer[env]
	echo, dialled := wsEcho(t, &ep)
	e, _ := authzEnv(t, Route{Route: proxy.Route{Prefix: "/ws/", Upstream: echo.URL}, Policy: PolicyUser,
		Rules: authz.Policy{Allow: []authz.Rule{{Groups: []string{"admin"}}}}})
	ep.Store(e)
	alice, bob := e.browser(), e.browser()
	alice.mustLogin("alice", alicePassword)
	bob.mustLogin("bob", bobPassword)
	wsURL := "ws" + strings.TrimPrefix(e.gwURL, "http") + "/ws/socket"
	dial := func(b *browser) (*websocket.Conn, *http.Response, error) {
		hdr := http.Header{"Origin": {e.gwURL}, "Cookie": {b.cookieHeader()}}
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		return (&websocket.Dialer{}).DialContext(ctx, wsURL, hdr)
	}
	conn, res, err := dial(bob)
	if err == nil {
		conn.Close()
		t.Fatal("bob's upgrade was accepted")
	}
	if res == nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(res.Body)
	res.Body.Close()
	if res.StatusCode != 403 || strings.TrimSpace(string(body)) != `{"error":"forbidden"}` || dialled.Load() != 0 {
		t.Fatalf("bob: %d %s (upstream dialled %d times), want 403 forbidden before any dial", res.StatusCode, body, dialled.Load())
	}
	conn, _, err = dial(alice)
	if err != nil {
		t.Fatalf("alice: %v", err)
	}
	defer conn.Close()
	if err := conn.WriteMessage(websocket.TextMessage, []byte("ping")); err != nil {
		t.Fatal(err)
	}
	if _, msg, err := conn.ReadMessage(); err != nil || string(msg) != "user-alice: ping" {
		t.Fatalf("alice: echo %q (%v)", msg, err)
	}
}

// TestAuthorizationConfig: rules that do not compile, name an unknown
// variable, are not bools, or sit on a route without a user stop the
// start, named by their key.
func TestAuthorizationConfig(t *testing.T) {
	t.Parallel()
	base := func(p Policy, rules authz.Policy) Config {
		cfg := DefaultConfig()
		cfg.PublicURL = "http://127.0.0.1:8080"
		cfg.Provider.IssuerURL = "http://127.0.0.1:9090"
		cfg.Provider.ClientID = "bff"
		cfg.Routes = []Route{{Route: proxy.Route{Prefix: "/api/", Upstream: "http://127.0.0.1:9"}, Policy: p, Rules: rules}}
		return cfg
	}
	for _, tc := range []struct {
		name string
		cfg  Config
		want []string
	}{
		{"syntax", base(PolicyUser, authz.Policy{Allow: []authz.Rule{{CEL: `claims.groups.exists(g,`}}}), []string{"routes[0].allow[0].cel", "does not compile"}},
		{"unknown variable", base(PolicyUser, authz.Policy{Deny: []authz.Rule{{CEL: `user.admin`}}}), []string{"routes[0].deny[0].cel", "undeclared reference"}},
		{"not a bool", base(PolicyUser, authz.Policy{Allow: []authz.Rule{{CEL: `request.path`}}}), []string{"routes[0].allow[0].cel", "bool"}},
		{"no user", base(PolicyClient, authz.Policy{Allow: []authz.Rule{{Groups: []string{"a"}}}}), []string{"routes[0].allow", "policy client"}},
		{"userinfo without use_userinfo", base(PolicyUser, authz.Policy{ClaimsFrom: authz.SourceUserinfo, Allow: []authz.Rule{{Groups: []string{"a"}}}}), []string{"routes[0].claims_from", "use_userinfo"}},
	} {
		err := tc.cfg.Validate()
		if err == nil {
			t.Errorf("%s: Validate accepted it", tc.name)
			continue
		}
		for _, w := range tc.want {
			if !strings.Contains(err.Error(), w) {
				t.Errorf("%s: %q lacks %q", tc.name, err, w)
			}
		}
	}
}

// gwCount sums the gateway's counter name over the series whose labels
// include labels.
func (e *env) gwCount(name string, labels map[string]string) float64 {
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
	metric:
		for _, m := range mf.GetMetric() {
			have := map[string]string{}
			for _, lp := range m.GetLabel() {
				have[lp.GetName()] = lp.GetValue()
			}
			for k, v := range labels {
				if have[k] != v {
					continue metric
				}
			}
			sum += m.GetCounter().GetValue()
		}
	}
	return sum
}
