package bff

import (
	"encoding/base64"
	"fmt"
	"sync"
	"testing"

	"github.com/bffgate/bffgate/bff/authz"
	"github.com/bffgate/bffgate/session"
)

// TestClaimsCache: the session's claims decode once per distinct JSON and
// stay right per session under concurrent use; the cache is bounded; token
// claims (which change at every refresh) are decoded each time; a session
// whose claims are not JSON is an error, never cached.
func TestClaimsCache(t *testing.T) {
	t.Parallel()
	cc := newClaimsCache(8)
	var wg sync.WaitGroup
	for i := range 16 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for j := range 200 {
				sub := fmt.Sprintf("user-%d", (i+j)%12)
				s := &session.Session{Claims: []byte(`{"sub":"` + sub + `","groups":["g"]}`)}
				for _, src := range []authz.Source{authz.SourceSession, authz.SourceUserinfo} {
					m, err := cc.claims(src, s)
					if err != nil || m["sub"] != sub {
						t.Errorf("claims of %s: %v %v", sub, m, err)
						return
					}
				}
			}
		}()
	}
	wg.Wait()
	if n := len(cc.m); n > 8 {
		t.Errorf("%d entries, want at most 8", n)
	}

	a, _ := cc.claims(authz.SourceSession, &session.Session{Claims: []byte(`{"sub":"x"}`)})
	b, _ := cc.claims(authz.SourceSession, &session.Session{Claims: []byte(`{"sub":"x"}`)})
	if fmt.Sprintf("%p", a) != fmt.Sprintf("%p", b) {
		t.Error("the same claims were decoded twice")
	}

	tok := func(sub string) string {
		return "e30." + base64.RawURLEncoding.EncodeToString([]byte(`{"sub":"`+sub+`"}`)) + ".sig"
	}
	s := &session.Session{Claims: []byte(`{"sub":"x"}`), AccessToken: tok("first")}
	if m, _ := cc.claims(authz.SourceAccessToken, s); m["sub"] != "first" {
		t.Errorf("access token claims %v", m)
	}
	s.AccessToken = tok("second")
	if m, _ := cc.claims(authz.SourceAccessToken, s); m["sub"] != "second" {
		t.Errorf("access token claims after a refresh %v: a token's claims were cached", m)
	}

	before := len(cc.m)
	if _, err := cc.claims(authz.SourceSession, &session.Session{Claims: []byte(`[1`)}); err == nil {
		t.Error("claims that are not JSON decoded")
	}
	if len(cc.m) > before {
		t.Error("a decoding error was cached")
	}
}
