package bff

import (
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	jose "github.com/go-jose/go-jose/v4"
	"github.com/go-jose/go-jose/v4/jwt"

	"github.com/bffgate/bffgate/bff/authz"
	"github.com/bffgate/bffgate/bff/proxy"
	"github.com/bffgate/bffgate/internal/testhttp"
	"github.com/bffgate/bffgate/session"
)

// assertionUpstream is an upstream that verifies the gateway's identity
// assertion with go-jose against the gateway's JWKS (fetched over HTTP, as
// a real upstream would) and echoes what it saw.
type assertionUpstream struct {
	srv   *httptest.Server
	mu    sync.Mutex
	gwURL string
}

type seenIdentity struct {
	User, Email, Groups, Username string
	Verified                      bool
	VerifyErr                     string
	Claims                        map[string]any
}

func newAssertionUpstream(t *testing.T, aud string) *assertionUpstream {
	u := &assertionUpstream{}
	u.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		seen := seenIdentity{
			User: r.Header.Get("X-Auth-Request-User"), Email: r.Header.Get("X-Auth-Request-Email"),
			Groups: r.Header.Get("X-Auth-Request-Groups"), Username: r.Header.Get("X-User-Name"),
		}
		if err := u.verify(r.Header.Get("X-Bffgate-Jwt-Assertion"), aud, &seen); err != nil {
			seen.VerifyErr = err.Error()
		} else {
			seen.Verified = true
		}
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(seen)
	}))
	t.Cleanup(u.srv.Close)
	return u
}

func (u *assertionUpstream) verify(raw, aud string, seen *seenIdentity) error {
	u.mu.Lock()
	gw := u.gwURL
	u.mu.Unlock()
	res, err := testhttp.Client.Get(gw + "/bff/jwks")
	if err != nil {
		return err
	}
	defer res.Body.Close()
	body, _ := io.ReadAll(res.Body)
	var set jose.JSONWebKeySet
	if err := json.Unmarshal(body, &set); err != nil {
		return err
	}
	tok, err := jwt.ParseSigned(raw, []jose.SignatureAlgorithm{jose.ES256})
	if err != nil {
		return err
	}
	keys := set.Key(tok.Headers[0].KeyID)
	if len(keys) != 1 {
		return io.ErrUnexpectedEOF
	}
	var std jwt.Claims
	if err := tok.Claims(keys[0].Key, &std, &seen.Claims); err != nil {
		return err
	}
	return std.ValidateWithLeeway(jwt.Expected{Issuer: gw, AnyAudience: jwt.Audience{aud}, Time: time.Now()}, 0)
}

// TestIdentityHeaders: a route with identity_headers gets the user, email
// and groups from the gateway only (the browser's copies, and a name of
// the operator's choosing, are replaced), and a signed assertion the
// upstream verifies against the gateway's JWKS, with aud = the route.
func TestIdentityHeaders(t *testing.T) {
	t.Parallel()
	idRoute := Route{Route: proxy.Route{Prefix: "/id/"}, Policy: PolicyUser,
		Rules: authz.Policy{Allow: []authz.Rule{{Groups: []string{"admin", "staff"}}}},
		Identity: IdentityHeaders{User: "X-Auth-Request-User", Email: "X-Auth-Request-Email", Groups: "X-Auth-Request-Groups",
			PreferredUsername: "X-User-Name", Assertion: "X-Bffgate-Jwt-Assertion"}}
	// The verifying upstream needs the gateway's URL (the issuer and
	// JWKS of the assertion, and its audience), known once the gateway
	// listens: the route points at a forwarder to it.
	var holder struct {
		sync.Mutex
		u *assertionUpstream
	}
	proxyTo := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		holder.Lock()
		u := holder.u
		holder.Unlock()
		u.srv.Config.Handler.ServeHTTP(w, r)
	}))
	t.Cleanup(proxyTo.Close)
	idRoute.Upstream = proxyTo.URL
	optRoute := Route{Route: proxy.Route{Prefix: "/idopt/", Upstream: proxyTo.URL}, Policy: PolicyUserOptional,
		Identity: IdentityHeaders{User: "X-Auth-Request-User", PreferredUsername: "X-User-Name", Assertion: "X-Bffgate-Jwt-Assertion"}}
	e2, _ := authzEnv(t, idRoute, optRoute)
	aud := e2.gwURL + "/id/"
	holder.Lock()
	holder.u = newAssertionUpstream(t, aud)
	holder.u.gwURL = e2.gwURL
	holder.Unlock()

	alice := e2.browser()
	alice.mustLogin("alice", alicePassword)
	r := alice.do(alice.noRedirect(), "GET", e2.gwURL+"/id/x", nil, map[string]string{
		"X-CSRF": "1", "X-Auth-Request-User": "mallory", "X-User-Name": "mallory", "X-Bffgate-Jwt-Assertion": "forged",
	})
	if r.status != 200 {
		t.Fatalf("alice: %d %s", r.status, r.body)
	}
	var seen seenIdentity
	r.json(t, &seen)
	if seen.User != "user-alice" || seen.Email != "alice@example.test" || seen.Groups != "admin,dev" || seen.Username != "alice" {
		t.Errorf("identity headers %+v", seen)
	}
	if !seen.Verified {
		t.Fatalf("the assertion did not verify against the gateway's JWKS: %s", seen.VerifyErr)
	}
	if seen.Claims["sub"] != "user-alice" || seen.Claims["email"] != "alice@example.test" || seen.Claims["aud"] != aud {
		t.Errorf("assertion claims %v", seen.Claims)
	}
	if exp, iat := seen.Claims["exp"].(float64), seen.Claims["iat"].(float64); exp-iat != AssertionLifetime.Seconds() {
		t.Errorf("assertion lives %v s, want %v", exp-iat, AssertionLifetime.Seconds())
	}

	// bob (group staff) is let through with his own identity; the
	// browser's spoofed headers never reach the upstream.
	bob := e2.browser()
	bob.mustLogin("bob", bobPassword)
	r = bob.do(bob.noRedirect(), "GET", e2.gwURL+"/id/x", nil, map[string]string{"X-CSRF": "1", "X-Auth-Request-Email": "alice@example.test"})
	var bs seenIdentity
	r.json(t, &bs)
	if r.status != 200 || bs.User != "user-bob" || bs.Email != "bob@other.test" || bs.Groups != "staff" || !bs.Verified {
		t.Errorf("bob: %d %+v", r.status, bs)
	}

	// Anonymous on user-optional: no identity, and none of the
	// browser's either, whatever the header's name.
	anon := e2.browser()
	r = anon.do(anon.noRedirect(), "GET", e2.gwURL+"/idopt/x", nil, map[string]string{"X-CSRF": "1", "X-User-Name": "mallory", "X-Bffgate-Jwt-Assertion": "forged"})
	var as seenIdentity
	r.json(t, &as)
	if r.status != 200 || as.Username != "" || as.User != "" || as.Verified {
		t.Errorf("anonymous: %d %+v, want no identity upstream", r.status, as)
	}

	// The JWKS is public JSON with one ES256 key.
	res, err := testhttp.Client.Get(e2.gwURL + "/bff/jwks")
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	var set jose.JSONWebKeySet
	if err := json.NewDecoder(res.Body).Decode(&set); err != nil || len(set.Keys) != 1 || set.Keys[0].Algorithm != "ES256" || !set.Keys[0].IsPublic() {
		t.Errorf("jwks: %v %+v", err, set)
	}
	if ct := res.Header.Get("Content-Type"); !strings.HasPrefix(ct, "application/jwk-set+json") {
		t.Errorf("jwks Content-Type %q", ct)
	}
}

// TestIdentityHeadersConfig: names the proxy manages, underscores,
// duplicates and identity on routes without a user are refused by key.
func TestIdentityHeadersConfig(t *testing.T) {
	t.Parallel()
	base := func(p Policy, id IdentityHeaders) Config {
		cfg := DefaultConfig()
		cfg.PublicURL = "http://127.0.0.1:8080"
		cfg.Provider.IssuerURL = "http://127.0.0.1:9090"
		cfg.Provider.ClientID = "bff"
		cfg.Routes = []Route{{Route: proxy.Route{Prefix: "/api/", Upstream: "http://127.0.0.1:9"}, Policy: p, Identity: id}}
		return cfg
	}
	for _, tc := range []struct {
		name string
		cfg  Config
		want []string
	}{
		{"managed", base(PolicyUser, IdentityHeaders{User: "Authorization"}), []string{"routes[0].identity_headers.user", "set by the proxy"}},
		{"underscore", base(PolicyUser, IdentityHeaders{Email: "X_Email"}), []string{"routes[0].identity_headers.email", "no _"}},
		{"duplicate", base(PolicyUser, IdentityHeaders{User: "X-Id", Assertion: "x-id"}), []string{"routes[0].identity_headers.assertion", "also identity_headers.user"}},
		{"no user", base(PolicyNone, IdentityHeaders{User: "X-Id"}), []string{"routes[0].identity_headers", "policy none"}},
	} {
		err := tc.cfg.Validate()
		if err == nil {
			t.Errorf("%s: accepted", tc.name)
			continue
		}
		for _, w := range tc.want {
			if !strings.Contains(err.Error(), w) {
				t.Errorf("%s: %q lacks %q", tc.name, err, w)
			}
		}
	}
}

// BenchmarkIdentityAssertion is the per-request cost of a route's identity
// headers with the signed assertion (claims decoded, ES256 signature).
func BenchmarkIdentityAssertion(b *testing.B) {
	signer, err := newAssertionSigner(nil, "https://app.example.com")
	if err != nil {
		b.Fatal(err)
	}
	id := &identity{IdentityHeaders: IdentityHeaders{User: "X-Auth-Request-User", Email: "X-Auth-Request-Email",
		Groups: "X-Auth-Request-Groups", Assertion: "X-Bffgate-Jwt-Assertion"}, aud: "https://app.example.com/api/", signer: signer}
	s := &session.Session{Subject: "user-alice", Claims: []byte(`{"sub":"user-alice","email":"alice@example.com","groups":["dev","admins"]}`)}
	now := time.Now()
	b.ReportAllocs()
	for b.Loop() {
		if h, err := id.headers(s, now); err != nil || len(h) != 4 {
			b.Fatal(h, err)
		}
	}
}
