package issuer_test

import (
	"encoding/base64"
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"testing"

	"github.com/bffgate/bffgate/issuer"
)

// jwtPayload decodes a JWT's claims without verifying it (the issuer's
// own token, read in a test).
func jwtPayload(t *testing.T, tok string) map[string]any {
	t.Helper()
	parts := strings.Split(tok, ".")
	if len(parts) != 3 {
		t.Fatalf("%d parts in the token", len(parts))
	}
	raw, err := base64.RawURLEncoding.DecodeString(parts[1])
	if err != nil {
		t.Fatal(err)
	}
	var m map[string]any
	if err := json.Unmarshal(raw, &m); err != nil {
		t.Fatal(err)
	}
	return m
}

// TestGroupsAndRolesScopes: a user's groups and roles are released with
// the groups and roles scopes (ID token, access token, userinfo) and not
// with profile alone; discovery lists both scopes.
func TestGroupsAndRolesScopes(t *testing.T) {
	t.Parallel()
	e := start(t, envOptions{cfg: func(c *issuer.Config) {
		c.Users[0].Groups = []string{"admin", "dev"}
		c.Users[0].Roles = []string{"editor"}
	}})
	for _, tc := range []struct {
		scopes      []string
		groups, rol bool
	}{
		{[]string{"openid", "profile", "email"}, false, false},
		{[]string{"openid", "profile", "groups"}, true, false},
		{[]string{"openid", "roles"}, false, true},
		{[]string{"openid", "groups", "roles"}, true, true},
	} {
		_, _, tk := e.loginTokens(webID, tc.scopes...)
		ui := e.userinfo(tk.access)
		if ui.status != http.StatusOK {
			t.Fatalf("%v: userinfo %d %s", tc.scopes, ui.status, ui.raw)
		}
		for where, claims := range map[string]map[string]any{"id token": jwtPayload(t, tk.id), "access token": jwtPayload(t, tk.access), "userinfo": ui.body} {
			g, hasG := claims["groups"]
			r, hasR := claims["roles"]
			if hasG != tc.groups || hasR != tc.rol {
				t.Errorf("%v: %s has groups %v (%v), roles %v (%v); want groups %v, roles %v", tc.scopes, where, hasG, g, hasR, r, tc.groups, tc.rol)
			}
			if hasG && fmt.Sprint(g) != "[admin dev]" || hasR && fmt.Sprint(r) != "[editor]" {
				t.Errorf("%v: %s: groups %v roles %v", tc.scopes, where, g, r)
			}
		}
	}
	disc := e.request(http.MethodGet, "/.well-known/openid-configuration", nil, nil)
	if s := fmt.Sprint(disc.body["scopes_supported"]); !strings.Contains(s, "groups") || !strings.Contains(s, "roles") {
		t.Errorf("scopes_supported = %s", s)
	}
}

// TestGroupsConfig: groups set twice (as a field and as a claim) or empty
// entries stop the start, named by their key.
func TestGroupsConfig(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name string
		edit func(*issuer.User)
		want string
	}{
		{"twice", func(u *issuer.User) { u.Groups = []string{"a"}; u.Claims["groups"] = []any{"b"} }, "users[0].claims.groups"},
		{"empty", func(u *issuer.User) { u.Roles = []string{""} }, "users[0].roles[0]"},
	} {
		cfg := baseConfig()
		cfg.Issuer = "http://127.0.0.1:9090"
		cfg.Users[0].Claims = map[string]any{"name": "A"}
		tc.edit(&cfg.Users[0])
		err := cfg.Validate()
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: Validate = %v, want an error at %s", tc.name, err, tc.want)
		}
	}
}
