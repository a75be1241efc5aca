package bff

import (
	"io"
	"log/slog"
	"net/http"
	"testing"

	"github.com/bffgate/bffgate/bff/authz"
	"github.com/bffgate/bffgate/internal/testhttp"
	"github.com/bffgate/bffgate/issuer"
)

// BenchmarkForwardAuth measures one decision of /bff/auth over loopback
// HTTP as nginx asks it (X-Original-URI from a trusted peer, the user's
// cookies): session read, rule, identity headers, the decision's log line
// (JSON, to io.Discard) and metrics. Rules: a groups shorthand with plain
// identity headers, the same with the signed assertion, and a CEL rule.
func BenchmarkForwardAuth(b *testing.B) {
	rules := []ForwardAuthRule{
		{Prefix: "/plain/", Rules: authz.Policy{Allow: []authz.Rule{{Groups: []string{"admin"}}}},
			Identity: IdentityHeaders{User: "X-Auth-Request-User", Email: "X-Auth-Request-Email", Groups: "X-Auth-Request-Groups"}},
		{Prefix: "/assertion/", Rules: authz.Policy{Allow: []authz.Rule{{Groups: []string{"admin"}}}}, Identity: faIdentity},
		{Prefix: "/cel/", Rules: authz.Policy{Allow: []authz.Rule{{CEL: `"admin" in claims.groups && request.method == "GET"`}}}},
	}
	for _, kind := range storeKinds {
		e := newEnv(b, kind, envOptions{issuer: func(c *issuer.Config) {
			c.Users[0].Claims = map[string]any{"name": "Alice Example", "email": "alice@example.test", "email_verified": true}
			c.Users[0].Groups = []string{"admin", "dev"}
		}, gateway: func(c *Config) {
			c.Provider.Scopes = []string{"openid", "profile", "email", "offline_access", "groups", "roles"}
			c.Logger = slog.New(slog.NewJSONHandler(io.Discard, nil))
			c.Proxy.TrustedProxies = []string{"127.0.0.1"}
			c.ForwardAuth.Rules = rules
		}})
		br := e.browser()
		if p := br.login("alice", alicePassword, "/home"); p.status != 200 {
			b.Fatalf("login: %d", p.status)
		}
		cookie := br.cookieHeader()
		for _, path := range []string{"/plain/x", "/assertion/x", "/cel/x"} {
			b.Run(string(kind)+path[:len(path)-2], func(b *testing.B) {
				client := &http.Client{Transport: testhttp.Transport()}
				b.ReportAllocs()
				b.ResetTimer()
				for b.Loop() {
					req, _ := http.NewRequest(http.MethodGet, e.gwURL+"/bff/auth", nil)
					req.Header.Set("Cookie", cookie)
					req.Header.Set("X-Original-URI", path)
					req.Header.Set("X-Original-Method", "GET")
					resp, err := client.Do(req)
					if err != nil {
						b.Fatal(err)
					}
					_, _ = io.Copy(io.Discard, resp.Body)
					resp.Body.Close()
					if resp.StatusCode != 200 {
						b.Fatalf("status %d", resp.StatusCode)
					}
				}
			})
		}
	}
}
