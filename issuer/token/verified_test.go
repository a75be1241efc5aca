package token

import (
	"errors"
	"testing"
	"time"
)

// TestVerifiedCache checks that an access token verified once is read
// from the cache with every check but the signature's still made, and
// that the cache hands out copies and stays bounded.
func TestVerifiedCache(t *testing.T) {
	t.Parallel()
	ks, _ := keySet(t, "A128CBC-HS256")
	c := newCodec(t, ks, Config{Alg: "ES256"})
	cl := sample(Access)
	cl.Extra = map[string]any{"tenant": "a"}
	raw, err := c.Mint(Access, cl)
	if err != nil {
		t.Fatal(err)
	}
	first, err := c.Parse(raw, Access, t0)
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := c.verified.get(accessSum(raw)); !ok {
		t.Fatal("a verified access token was not cached")
	}
	first.Audience[0] = "changed"
	first.Extra["tenant"] = "changed"
	second, err := c.Parse(raw, Access, t0)
	if err != nil {
		t.Fatal(err)
	}
	if second.Audience[0] != "https://api.example.test" || second.Extra["tenant"] != "a" {
		t.Fatalf("the cache handed out its own claims: %v %v", second.Audience, second.Extra)
	}
	if _, err := c.Parse(raw, Access, t0.Add(2*time.Hour)); !errors.Is(err, ErrExpired) {
		t.Fatalf("a cached token past its exp: %v", err)
	}
	if _, err := c.Parse(raw, Refresh, t0); err == nil {
		t.Fatal("a cached access token was accepted as a refresh token")
	}
	// A token differing from the cached one in one byte of its signature
	// is verified, and refused.
	tampered := []byte(raw)
	tampered[len(tampered)-2] ^= 'A' ^ 'B'
	if tampered[len(tampered)-2] == raw[len(raw)-2] {
		t.Fatal("tampering changed nothing")
	}
	if _, err := c.Parse(string(tampered), Access, t0); err == nil {
		t.Fatal("a tampered copy of a cached token was accepted")
	}

	for i := range verifiedMax + 50 {
		cl := sample(Access)
		cl.JTI = "jti-" + string(rune('a'+i%26)) + time.Duration(i).String()
		raw, err := c.Mint(Access, cl)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := c.Parse(raw, Access, t0); err != nil {
			t.Fatal(err)
		}
	}
	c.verified.mu.RLock()
	n := len(c.verified.m)
	c.verified.mu.RUnlock()
	if n > verifiedMax {
		t.Fatalf("cache holds %d entries, bound %d", n, verifiedMax)
	}
}
