package issuer_test

import (
	"net/http"
	"net/url"
	"strings"
	"testing"

	"github.com/bffgate/bffgate/issuer"
)

// TestManagedClients: clients registered by the embedding program (the
// gateway's frontends) come, change and go while the issuer runs.
func TestManagedClients(t *testing.T) {
	t.Parallel()
	e := start(t, envOptions{})
	managed := func(secret string) issuer.Client {
		return issuer.Client{ID: "bffgate-admin", Secret: secret,
			RedirectURIs: []string{"https://admin.example.test/bff/callback"},
			GrantTypes:   []string{issuer.GrantAuthorizationCode, issuer.GrantRefreshToken, issuer.GrantClientCredentials}}
	}
	first := auth{id: "bffgate-admin", secret: "first-secret-0123456789abcdef", basic: true}
	second := auth{id: "bffgate-admin", secret: "second-secret-0123456789abcdef", basic: true}
	cc := url.Values{"grant_type": {"client_credentials"}}

	if r := e.post("/token", first, cc); r.status != http.StatusUnauthorized {
		t.Fatalf("an unregistered client got a token: %d %s", r.status, r.raw)
	}
	if err := e.srv.SetManagedClients([]issuer.Client{managed(first.secret)}); err != nil {
		t.Fatal(err)
	}
	r := e.post("/token", first, cc)
	if r.status != http.StatusOK {
		t.Fatalf("managed client: %d %s", r.status, r.raw)
	}
	tok := r.str("access_token")
	if r := e.post("/introspect", first, url.Values{"token": {tok}}); r.body["active"] != true {
		t.Fatalf("its token: %s", r.raw)
	}

	// A changed secret holds from the next request.
	if err := e.srv.SetManagedClients([]issuer.Client{managed(second.secret)}); err != nil {
		t.Fatal(err)
	}
	if r := e.post("/token", first, cc); r.status != http.StatusUnauthorized {
		t.Fatalf("the replaced secret: %d %s", r.status, r.raw)
	}
	if r := e.post("/token", second, cc); r.status != http.StatusOK {
		t.Fatalf("the new secret: %d %s", r.status, r.raw)
	}

	// Refused sets change nothing and name the entry and field.
	for _, tc := range []struct {
		name string
		c    issuer.Client
		want string
	}{
		{"a configured client's id", issuer.Client{ID: webID, Secret: "x-secret-0123456789abcdef0123", RedirectURIs: []string{"https://x.example.test/cb"}}, "managed_clients[1].id"},
		{"an agent", issuer.Client{ID: "agent-x", Kind: issuer.KindAgent}, "managed_clients[1].kind"},
		{"plain http off loopback", issuer.Client{ID: "bffgate-x", Secret: "x-secret-0123456789abcdef0123", RedirectURIs: []string{"http://x.example.test/cb"}}, "managed_clients[1].redirect_uris[0]"},
		{"twice", managed("third-secret-0123456789abcdef"), "registered twice"},
	} {
		err := e.srv.SetManagedClients([]issuer.Client{managed(second.secret), tc.c})
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: %v, want an error naming %s", tc.name, err, tc.want)
		}
	}
	if r := e.post("/token", second, cc); r.status != http.StatusOK {
		t.Fatalf("after refused sets: %d %s", r.status, r.raw)
	}

	// Removed: no grant, and its tokens are inactive.
	if err := e.srv.SetManagedClients(nil); err != nil {
		t.Fatal(err)
	}
	if r := e.post("/token", second, cc); r.status != http.StatusUnauthorized {
		t.Fatalf("a removed client got a token: %d %s", r.status, r.raw)
	}
	if r := e.introspect(tok); r.body["active"] != false {
		t.Fatalf("a removed client's token: %s", r.raw)
	}
	// The configured clients were never touched.
	if r := e.post("/token", svcBasic, cc); r.status != http.StatusOK {
		t.Fatalf("a configured client: %d %s", r.status, r.raw)
	}
}
