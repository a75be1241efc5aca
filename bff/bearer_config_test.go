package bff

import (
	"testing"

	"github.com/bffgate/bffgate/bff/proxy"
)

// TestBearerConfigValidation: the bearer and mcp keys of a route, each
// refusal under its YAML key path.
func TestBearerConfigValidation(t *testing.T) {
	t.Parallel()
	route := func(edit func(*Route)) func(*Config) {
		return func(c *Config) {
			r := Route{Route: proxy.Route{Prefix: "/mcp/", Upstream: "http://127.0.0.1:1"}, Policy: PolicyClient,
				Bearer: RouteBearer{Auth: []AuthMethod{AuthBearer}}}
			edit(&r)
			c.Routes = []Route{r}
		}
	}
	for _, tc := range []struct {
		name  string
		edit  func(*Config)
		field string
	}{
		{"unknown auth", route(func(r *Route) { r.Bearer.Auth = []AuthMethod{"basic"} }), "routes[0].auth[0]"},
		{"auth twice", route(func(r *Route) { r.Bearer.Auth = []AuthMethod{AuthBearer, AuthBearer} }), "routes[0].auth[1]"},
		{"empty auth", route(func(r *Route) { r.Bearer.Auth = []AuthMethod{} }), "routes[0].auth"},
		{"resource with fragment", route(func(r *Route) { r.Bearer.Resource = "https://gw.example/mcp#x" }), "routes[0].resource"},
		{"resource relative", route(func(r *Route) { r.Bearer.Resource = "/mcp" }), "routes[0].resource"},
		{"scope with a quote", route(func(r *Route) { r.Bearer.Scopes = []string{`a"b`} }), "routes[0].scopes[0]"},
		{"resource without bearer", route(func(r *Route) {
			r.Bearer.Auth = nil
			r.Bearer.Resource = "https://gw.example/mcp"
		}), "routes[0].auth"},
		{"passthrough", route(func(r *Route) { r.Policy = PolicyUser }), "routes[0].auth"},
		{"bad tool glob", route(func(r *Route) { r.MCP.Tools.Deny = []string{"[a-"} }), "routes[0].mcp.tools.deny[0]"},
		{"bad method glob", route(func(r *Route) { r.MCP.Methods.Allow = []string{""} }), "routes[0].mcp.methods.allow[0]"},
		{"tool scopes empty", route(func(r *Route) { r.MCP.Tools.Scopes = map[string][]string{"admin_*": nil} }), "routes[0].mcp.tools.scopes.admin_*"},
		{"offline_access required", route(func(r *Route) { r.Bearer.Scopes = []string{"mcp:tools", "offline_access"} }), "routes[0].scopes[1]"},
		{"offline_access for a tool", route(func(r *Route) {
			r.MCP.Tools.Scopes = map[string][]string{"admin_*": {"offline_access"}}
		}), "routes[0].mcp.tools.scopes.admin_*[0]"},
		{"scope_implies empty", route(func(r *Route) { r.Bearer.ScopeImplies = map[string][]string{"mcp:admin": nil} }), "routes[0].scope_implies.mcp:admin"},
		{"scope_implies bad scope", route(func(r *Route) {
			r.Bearer.ScopeImplies = map[string][]string{"mcp:admin": {`a"b`}}
		}), "routes[0].scope_implies.mcp:admin[0]"},
		{"scope_implies without bearer", route(func(r *Route) {
			r.Bearer.Auth = nil
			r.Bearer.ScopeImplies = map[string][]string{"mcp:admin": {"mcp:tools"}}
		}), "routes[0].auth"},
		{"one resource for two routes", func(c *Config) {
			b := RouteBearer{Auth: []AuthMethod{AuthBearer}, Resource: "https://app.example.test/mcp"}
			c.Routes = []Route{
				{Route: proxy.Route{Prefix: "/mcp/", Upstream: "http://127.0.0.1:1"}, Policy: PolicyClient, Bearer: RouteBearer{Auth: b.Auth}},
				{Route: proxy.Route{Prefix: "/other/", Upstream: "http://127.0.0.1:1"}, Policy: PolicyClient, Bearer: b},
			}
		}, "routes[1].resource"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg := validConfig()
			tc.edit(&cfg)
			if err := cfg.Validate(); !hasField(err, tc.field) {
				t.Fatalf("Validate() = %v, want a FieldError at %s", err, tc.field)
			}
		})
	}
	for _, tc := range []struct {
		name string
		edit func(*Config)
	}{
		{"client token", route(func(*Route) {})},
		{"no token", route(func(r *Route) { r.Policy = PolicyNone })},
		{"exchange", route(func(r *Route) {
			r.Policy = PolicyUser
			r.Bearer.Auth = []AuthMethod{AuthSession, AuthBearer}
			r.Token.Exchange = RouteExchange{Audience: "mcp-server"}
		})},
		{"session MCP route", func(c *Config) {
			c.Routes = []Route{{Route: proxy.Route{Prefix: "/mcp/", Upstream: "http://127.0.0.1:1"}, MCP: MCPConfig{Enabled: true}}}
		}},
	} {
		t.Run("valid "+tc.name, func(t *testing.T) {
			cfg := validConfig()
			tc.edit(&cfg)
			if err := cfg.Validate(); err != nil {
				t.Fatal(err)
			}
		})
	}
}

// TestScopeHierarchy: a broader scope satisfies the narrower ones the
// route's scope_implies lists, transitively (MCP authorization
// 2026-07-28); nothing else is implied, names alone included.
func TestScopeHierarchy(t *testing.T) {
	t.Parallel()
	b := &bearerRoute{implies: closeImplies(map[string][]string{
		"mcp:admin": {"mcp:tools"},
		"mcp:tools": {"mcp:read"},
		"loop:a":    {"loop:b"},
		"loop:b":    {"loop:a"},
	})}
	for _, tc := range []struct {
		have, want []string
		ok         bool
	}{
		{[]string{"mcp:tools"}, []string{"mcp:tools"}, true},
		{[]string{"mcp:admin"}, []string{"mcp:tools"}, true},
		{[]string{"mcp:admin"}, []string{"mcp:read", "mcp:tools"}, true},
		{[]string{"mcp:tools"}, []string{"mcp:admin"}, false},
		{[]string{"mcp:read"}, []string{"mcp:tools"}, false},
		{[]string{"mcp"}, []string{"mcp:tools"}, false}, // a prefix implies nothing
		{[]string{"mcp:admin"}, []string{"mcp:tools", "roles"}, false},
		{[]string{"loop:a"}, []string{"loop:b"}, true},
		{nil, []string{"mcp:read"}, false},
		{nil, nil, true},
	} {
		if got := b.satisfies(tc.have, tc.want); got != tc.ok {
			t.Errorf("a token with %v for a call needing %v: %v, want %v", tc.have, tc.want, got, tc.ok)
		}
	}
	if got := withoutOfflineAccess([]string{"profile", "offline_access", "roles"}); len(got) != 2 || got[0] != "profile" || got[1] != "roles" {
		t.Errorf("withoutOfflineAccess = %v", got)
	}
}
