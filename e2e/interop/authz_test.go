package interop

import (
	"net/http"
	"slices"
	"strings"
	"testing"
)

// TestGatewayGroupsFromProvider: groups and roles of oidc-provider's
// accounts reach the gateway's authorization rules. oidc-provider's ID
// token carries only sub (OIDC Core §5.4), so the claims come from its
// userinfo endpoint (gateway.provider.use_userinfo, claims_from:
// userinfo), asked for with the groups and roles scopes: a route allowed
// by group, one by role, and a forward-auth rule, each passing the
// account that has the claim and refusing the one that does not.
func TestGatewayGroupsFromProvider(t *testing.T) {
	t.Parallel()
	ctx := testContext(t)
	e := startGateway(t, gatewayOptions{
		AccountClaims: map[string]map[string]any{
			"ops-lead": {"groups": []string{"ops", "staff"}, "roles": []string{"approver"}},
			"guest":    {"groups": []string{"visitors"}},
		},
		Routes: []map[string]any{
			{"prefix": "/ops/", "policy": "user", "claims_from": "userinfo", "allow": []map[string]any{{"groups": []string{"ops"}}}},
			{"prefix": "/approve/", "policy": "user", "claims_from": "userinfo", "allow": []map[string]any{{"roles": []string{"approver"}}}},
			{"prefix": "/cel/", "policy": "user", "allow": []map[string]any{{"cel": `"staff" in claims.groups && claims.email.endsWith("@example.test")`}}},
		},
		Env: []string{
			"BFFGATE_GATEWAY_PROVIDER_SCOPES=[openid, profile, email, offline_access, groups, roles]",
			"BFFGATE_GATEWAY_TRUSTED_PROXIES=[127.0.0.1]",
			`BFFGATE_GATEWAY_FORWARD_AUTH_RULES=[{"prefix": "/ops-console/", "claims_from": "userinfo", "allow": [{"groups": ["ops"]}], "identity_headers": {"user": "X-Auth-Request-User", "groups": "X-Auth-Request-Groups"}}]`,
		},
	})
	lead := e.signIn(ctx, t, "ops-lead")
	guest := e.signIn(ctx, t, "guest")

	_, claims := lead.user(ctx)
	var groups []string
	for _, c := range claims {
		if c.Type == "groups" {
			if s, ok := c.Value.(string); ok {
				groups = append(groups, s)
			}
		}
	}
	if !slices.Contains(groups, "ops") {
		t.Fatalf("ops-lead's /bff/user has groups %v: the userinfo claims did not reach the session (%v)", groups, claims)
	}

	for _, tc := range []struct {
		path       string
		lead, gues int
	}{
		{"/ops/x", 200, 403},
		{"/approve/x", 200, 403},
		{"/cel/x", 200, 403},
		{"/api/x", 200, 200},
	} {
		for _, u := range []struct {
			name string
			u    *gwUser
			want int
		}{{"ops-lead", lead, tc.lead}, {"guest", guest, tc.gues}} {
			r, err := u.u.do(ctx, http.MethodGet, e.st.GatewayURL+tc.path, nil, csrf)
			if err != nil {
				t.Fatal(err)
			}
			if r.Status != u.want {
				t.Errorf("%s %s: %d %s, want %d", u.name, tc.path, r.Status, clip(string(r.Body), 200), u.want)
			}
			if r.Status == 403 && strings.TrimSpace(string(r.Body)) != `{"error":"forbidden"}` {
				t.Errorf("%s %s: 403 body %s", u.name, tc.path, r.Body)
			}
		}
	}

	hdr := http.Header{"X-Original-Uri": {"/ops-console/dashboard"}, "X-Original-Method": {"GET"}}
	r, err := lead.do(ctx, http.MethodGet, e.st.GatewayURL+"/bff/auth", nil, hdr)
	if err != nil {
		t.Fatal(err)
	}
	if r.Status != 200 || r.Header.Get("X-Auth-Request-User") != "ops-lead" || r.Header.Get("X-Auth-Request-Groups") != "ops,staff" {
		t.Errorf("forward auth for ops-lead: %d user %q groups %q", r.Status, r.Header.Get("X-Auth-Request-User"), r.Header.Get("X-Auth-Request-Groups"))
	}
	if r, err := guest.do(ctx, http.MethodGet, e.st.GatewayURL+"/bff/auth", nil, hdr); err != nil || r.Status != 403 {
		t.Errorf("forward auth for guest: %d %v, want 403", r.Status, err)
	}
}
