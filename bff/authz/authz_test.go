package authz

import (
	"errors"
	"strings"
	"testing"
)

func mustClaims(t testing.TB, js string) map[string]any {
	t.Helper()
	m, err := Claims([]byte(js))
	if err != nil {
		t.Fatal(err)
	}
	return m
}

func TestDecide(t *testing.T) {
	t.Parallel()
	alice := `{"sub":"alice","email":"Alice@Example.com","email_verified":true,"groups":["admins","dev"],"roles":["reader"],"realm_access":{"roles":["kc-admin"]},"level":3,"dept":"ops"}`
	cases := []struct {
		name    string
		policy  Policy
		claims  string
		method  string
		allowed bool
		rule    string
		err     bool
	}{
		{"no rules", Policy{}, `{}`, "GET", true, "", false},
		{"group allowed", Policy{Allow: []Rule{{Groups: []string{"admins"}}}}, alice, "GET", true, "allow[0]", false},
		{"group denied", Policy{Allow: []Rule{{Groups: []string{"finance"}}}}, alice, "GET", false, "allow", false},
		{"group as a string", Policy{Allow: []Rule{{Groups: []string{"admins"}}}}, `{"groups":"admins"}`, "GET", true, "allow[0]", false},
		{"groups of the wrong type", Policy{Allow: []Rule{{Groups: []string{"admins"}}}}, `{"groups":{"admins":true}}`, "GET", false, "allow", false},
		{"groups with numbers", Policy{Allow: []Rule{{Groups: []string{"admins"}}}}, `{"groups":[1,"admins"]}`, "GET", true, "allow[0]", false},
		{"role claim", Policy{Allow: []Rule{{Roles: []string{"reader"}}}}, alice, "GET", true, "allow[0]", false},
		{"keycloak realm role", Policy{Allow: []Rule{{Roles: []string{"kc-admin"}}}}, alice, "GET", true, "allow[0]", false},
		{"email domain", Policy{Allow: []Rule{{EmailDomains: []string{"example.com"}}}}, alice, "GET", true, "allow[0]", false},
		{"email domain suffix trick", Policy{Allow: []Rule{{EmailDomains: []string{"example.com"}}}}, `{"email":"a@evilexample.com"}`, "GET", false, "allow", false},
		{"unverified email", Policy{Allow: []Rule{{EmailDomains: []string{"example.com"}}}}, `{"email":"a@example.com","email_verified":false}`, "GET", false, "allow", false},
		{"email", Policy{Allow: []Rule{{Emails: []string{"alice@example.com"}}}}, alice, "GET", true, "allow[0]", false},
		{"claim path", Policy{Allow: []Rule{{Claims: map[string][]string{"realm_access.roles": {"kc-admin"}}}}}, alice, "GET", true, "allow[0]", false},
		{"claim number", Policy{Allow: []Rule{{Claims: map[string][]string{"level": {"3"}}}}}, alice, "GET", true, "allow[0]", false},
		{"and within a rule", Policy{Allow: []Rule{{Groups: []string{"admins"}, Claims: map[string][]string{"dept": {"finance"}}}}}, alice, "GET", false, "allow", false},
		{"or across rules", Policy{Allow: []Rule{{Groups: []string{"finance"}}, {Claims: map[string][]string{"dept": {"ops"}}}}}, alice, "GET", true, "allow[1]", false},
		{"deny wins", Policy{Allow: []Rule{{Groups: []string{"admins"}}}, Deny: []Rule{{Groups: []string{"dev"}}}}, alice, "GET", false, "deny[0]", false},
		{"cel allowed", Policy{Allow: []Rule{{CEL: `"admins" in claims.groups && request.method == "GET"`}}}, alice, "GET", true, "allow[0]", false},
		{"cel method denied", Policy{Allow: []Rule{{CEL: `"admins" in claims.groups && request.method == "GET"`}}}, alice, "DELETE", false, "allow", false},
		{"cel missing claim denies", Policy{Allow: []Rule{{CEL: `claims.missing == "x"`}}}, alice, "GET", false, "allow", true},
		{"cel wrong type denies", Policy{Allow: []Rule{{CEL: `"admins" in claims.dept`}}}, alice, "GET", false, "allow", true},
		{"cel string list", Policy{Allow: []Rule{{CEL: `claims.groups.exists(g, g.startsWith("adm"))`}}}, alice, "GET", true, "allow[0]", false},
		{"deny error denies", Policy{Deny: []Rule{{CEL: `claims.missing == "x"`}}}, alice, "GET", false, "deny[0]", true},
		{"deny no match", Policy{Deny: []Rule{{CEL: `request.path.startsWith("/api/admin")`}}}, alice, "GET", true, "", false},
		{"anonymous", Policy{Allow: []Rule{{Groups: []string{"admins"}}}}, ``, "GET", false, "allow", false},
		{"cel dyn result not bool", Policy{Allow: []Rule{{CEL: `claims.dept`}}}, alice, "GET", false, "allow", true},
		{"cel has guard", Policy{Allow: []Rule{{CEL: `has(claims.missing) && claims.missing == "x" || claims.dept == "ops"`}}}, alice, "GET", true, "allow[0]", false},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			d, err := Compile(tc.policy)
			if err != nil {
				t.Fatal(err)
			}
			var claims map[string]any
			if tc.claims != "" {
				claims = mustClaims(t, tc.claims)
			}
			got := d.Decide(Input{Claims: claims, Method: tc.method, Path: "/api/x", Host: "app.example.com"})
			if got.Allowed != tc.allowed || got.Rule != tc.rule || (got.Err != nil) != tc.err {
				t.Fatalf("Decide = %+v; want allowed=%v rule=%q err=%v", got, tc.allowed, tc.rule, tc.err)
			}
		})
	}
}

func TestCompileErrors(t *testing.T) {
	t.Parallel()
	cases := []struct {
		name   string
		policy Policy
		want   []string
	}{
		{"syntax", Policy{Allow: []Rule{{CEL: `claims.groups.exists(g,`}}}, []string{"allow[0].cel", "does not compile"}},
		{"unknown variable", Policy{Deny: []Rule{{Groups: []string{"x"}}, {CEL: `user.email == "x"`}}}, []string{"deny[1].cel", "undeclared reference", "user"}},
		{"not a bool", Policy{Allow: []Rule{{CEL: `request.method`}}}, []string{"allow[0].cel", "string", "must be a bool"}},
		{"empty rule", Policy{Allow: []Rule{{}}}, []string{"allow[0]", "sets no condition"}},
		{"bad domain", Policy{Allow: []Rule{{EmailDomains: []string{"a@b"}}}}, []string{"allow[0].email_domains[0]"}},
		{"bad source", Policy{ClaimsFrom: "cookie", Allow: []Rule{{Groups: []string{"a"}}}}, []string{"claims_from", `"cookie"`}},
		{"claim without values", Policy{Allow: []Rule{{Claims: map[string][]string{"dept": nil}}}}, []string{"allow[0].claims.dept", "no value"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			_, err := Compile(tc.policy)
			if err == nil {
				t.Fatal("Compile succeeded")
			}
			var fe *FieldError
			if !errors.As(err, &fe) {
				t.Fatalf("%v is no *FieldError", err)
			}
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q lacks %q", err, w)
				}
			}
		})
	}
}

func TestJWTClaims(t *testing.T) {
	t.Parallel()
	// {"realm_access":{"roles":["admin"]}}
	m, err := JWTClaims("eyJhbGciOiJSUzI1NiJ9.eyJyZWFsbV9hY2Nlc3MiOnsicm9sZXMiOlsiYWRtaW4iXX19.c2ln")
	if err != nil {
		t.Fatal(err)
	}
	if got := Strings(lookup(m, []string{"realm_access", "roles"})); len(got) != 1 || got[0] != "admin" {
		t.Fatalf("roles = %v", got)
	}
	for _, tok := range []string{"opaque-token", "a.!!!.c", "a.bm90IGpzb24.c"} {
		if _, err := JWTClaims(tok); err == nil {
			t.Errorf("JWTClaims(%q) succeeded", tok)
		}
	}
}

// BenchmarkDecideCEL is the cost of one policy decision per request: a CEL
// rule over the groups claim and the method, after the claims are decoded.
func BenchmarkDecideCEL(b *testing.B) {
	d, err := Compile(Policy{Allow: []Rule{{CEL: `"admins" in claims.groups && request.method in ["GET", "POST"]`}}})
	if err != nil {
		b.Fatal(err)
	}
	claims := mustClaims(b, `{"sub":"alice","email":"alice@example.com","groups":["dev","ops","admins"]}`)
	in := Input{Claims: claims, Method: "GET", Path: "/api/x", Host: "app.example.com"}
	b.ReportAllocs()
	for b.Loop() {
		if !d.Decide(in).Allowed {
			b.Fatal("denied")
		}
	}
}

// BenchmarkDecideShorthand is the same decision with the groups shorthand.
func BenchmarkDecideShorthand(b *testing.B) {
	d, err := Compile(Policy{Allow: []Rule{{Groups: []string{"admins"}}}})
	if err != nil {
		b.Fatal(err)
	}
	in := Input{Claims: mustClaims(b, `{"sub":"alice","groups":["dev","ops","admins"]}`), Method: "GET"}
	b.ReportAllocs()
	for b.Loop() {
		if !d.Decide(in).Allowed {
			b.Fatal("denied")
		}
	}
}

// BenchmarkDecideWithClaims adds decoding the session's claims JSON, as
// the gateway does per request.
func BenchmarkDecideWithClaims(b *testing.B) {
	d, err := Compile(Policy{Allow: []Rule{{CEL: `"admins" in claims.groups && request.method in ["GET", "POST"]`}}})
	if err != nil {
		b.Fatal(err)
	}
	raw := []byte(`{"sub":"alice","email":"alice@example.com","email_verified":true,"name":"Alice","preferred_username":"alice","groups":["dev","ops","admins"]}`)
	b.ReportAllocs()
	for b.Loop() {
		claims, _ := Claims(raw)
		if !d.Decide(Input{Claims: claims, Method: "GET"}).Allowed {
			b.Fatal("denied")
		}
	}
}
