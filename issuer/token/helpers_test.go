package token

import (
	"context"
	"log/slog"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/bffgate/bffgate/issuer/keys"
	"github.com/bffgate/bffgate/issuer/storage"
)

const testIssuer = "https://issuer.example.test"

var t0 = time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)

// memStore is the two key methods of storage.Store in memory: the tests
// here are about tokens; the keys tests run on a real bbolt file.
type memStore struct {
	mu   sync.Mutex
	keys []storage.Key
}

func cloneKeys(in []storage.Key) []storage.Key {
	out := make([]storage.Key, len(in))
	for i, k := range in {
		k.Private = slices.Clone(k.Private)
		out[i] = k
	}
	return out
}

func (m *memStore) Keys(context.Context) ([]storage.Key, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	return cloneKeys(m.keys), nil
}

func (m *memStore) UpdateKeys(_ context.Context, fn func([]storage.Key) ([]storage.Key, error)) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	out, err := fn(cloneKeys(m.keys))
	if err != nil {
		return err
	}
	m.keys = cloneKeys(out)
	return nil
}

var quiet = slog.New(slog.DiscardHandler)

// allKeys generates once per test binary an active key for every alg
// and a dir key (32 bytes: both A128CBC-HS256 and A256GCM use it).
var allKeys = sync.OnceValues(func() ([]storage.Key, error) {
	st := &memStore{}
	_, err := keys.Open(context.Background(), keys.Config{Store: st, Algorithms: keys.SigningAlgorithms(), Encryption: "A128CBC-HS256", Logger: quiet})
	return st.keys, err
})

// keySet returns a key set over a copy of allKeys with the given enc, and
// its store (for Rotate).
func keySet(tb testing.TB, enc string) (*keys.Set, *memStore) {
	tb.Helper()
	k, err := allKeys()
	if err != nil {
		tb.Fatal(err)
	}
	st := &memStore{keys: cloneKeys(k)}
	s, err := keys.Open(context.Background(), keys.Config{Store: st, Algorithms: keys.SigningAlgorithms(), Encryption: enc, Logger: quiet})
	if err != nil {
		tb.Fatal(err)
	}
	return s, st
}

func newCodec(tb testing.TB, ks *keys.Set, cfg Config) *Codec {
	tb.Helper()
	cfg.Keys = ks
	if cfg.Issuer == "" {
		cfg.Issuer = testIssuer
	}
	if cfg.Now == nil {
		cfg.Now = func() time.Time { return t0 }
	}
	c, err := New(cfg)
	if err != nil {
		tb.Fatal(err)
	}
	return c
}

// sample returns claims of kind, issued at t0, valid for an hour.
func sample(kind Kind) Claims {
	cl := Claims{
		Subject:   "user-1",
		Audience:  []string{"https://api.example.test"},
		ClientID:  "spa",
		Scope:     "openid profile offline_access",
		JTI:       "jti-" + kind.Typ(),
		IssuedAt:  t0,
		NotBefore: t0,
		Expiry:    t0.Add(time.Hour),
		AuthTime:  t0.Add(-time.Minute),
		SID:       "sid-1",
		GrantID:   "grant-1",
	}
	if kind == ID {
		cl.Audience = []string{"spa"}
		cl.Nonce = "n-0S6_WzA2Mj"
		cl.AccessTokenHash = "77QmUPtjPfzWtF2AnpK9RQ"
		cl.Extra = map[string]any{"name": "Jane Doe", "email": "jane@example.test", "email_verified": true}
		cl.GrantID, cl.Scope, cl.JTI, cl.NotBefore = "", "", "", time.Time{}
	}
	return cl
}
