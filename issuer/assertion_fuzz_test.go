package issuer

import (
	"testing"
	"time"
)

// FuzzClientAssertion feeds arbitrary client assertions to the parsing and
// verification a token request runs before any key is trusted: it must
// never panic, and never accept an assertion not signed by the key set.
func FuzzClientAssertion(f *testing.F) {
	for _, seed := range []string{
		"eyJhbGciOiJFUzI1NiIsImtpZCI6ImsxIn0.eyJpc3MiOiJhIiwic3ViIjoiYSJ9.AAAA",
		"eyJhbGciOiJub25lIn0.eyJzdWIiOiJhIn0.",
		"eyJhbGciOiJIUzI1NiJ9.e30.c2ln",
		"a.b.c", "..", "", "eyJ9.eyJ9.eyJ9", "e30.e30.e30.e30.e30",
	} {
		f.Add(seed)
	}
	keys := staticKeys{} // no key: nothing may verify
	f.Fuzz(func(t *testing.T, raw string) {
		_, _ = peekClaims(raw)
		h, err := peekHeader(raw)
		if err != nil {
			return
		}
		_ = checkAlg("client assertion", h.Alg, AssertionAlgorithms)
		var c map[string]any
		if err := verifyJWS("client assertion", raw, h, AssertionAlgorithms, keys, time.Now(), &c); err == nil {
			t.Fatalf("an assertion verified against an empty key set: %q", raw)
		}
	})
}
