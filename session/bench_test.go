package session_test

// Benchmarks for the README figures of the sessions issue: per-request
// cost of a cookie-session decode and a bbolt-session lookup, and the
// handle bytes of a typical session from the embedded issuer (ES256 and
// RS256 tokens) and from a provider with large tokens.

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"encoding/base64"
	"encoding/json"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/go-jose/go-jose/v4"
	"github.com/prometheus/client_golang/prometheus"
	goredis "github.com/redis/go-redis/v9"
	bbolt "go.etcd.io/bbolt"

	"github.com/bffgate/bffgate/internal/redistest"
	"github.com/bffgate/bffgate/session"
	sbolt "github.com/bffgate/bffgate/session/bolt"
	"github.com/bffgate/bffgate/session/cookie"
	sredis "github.com/bffgate/bffgate/session/redis"
)

// claims like the embedded issuer's (issuer/token).
type claims struct {
	Iss      string `json:"iss"`
	Sub      string `json:"sub"`
	Aud      string `json:"aud,omitempty"`
	Exp      int64  `json:"exp"`
	Iat      int64  `json:"iat"`
	Nbf      int64  `json:"nbf,omitempty"`
	JTI      string `json:"jti,omitempty"`
	ClientID string `json:"client_id,omitempty"`
	Scope    string `json:"scope,omitempty"`
	AuthTime int64  `json:"auth_time,omitempty"`
	SID      string `json:"sid,omitempty"`
	GrantID  string `json:"grant_id,omitempty"`
	Nonce    string `json:"nonce,omitempty"`
	AtHash   string `json:"at_hash,omitempty"`
	Azp      string `json:"azp,omitempty"`
	Name     string `json:"name,omitempty"`
	Email    string `json:"email,omitempty"`
	Pad      string `json:"pad,omitempty"` // to build large tokens
}

func rnd(b testing.TB, n int) string {
	buf := make([]byte, n)
	if _, err := rand.Read(buf); err != nil {
		b.Fatal(err)
	}
	return base64.RawURLEncoding.EncodeToString(buf)
}

func sign(b testing.TB, alg jose.SignatureAlgorithm, key any, c claims) string {
	b.Helper()
	signer, err := jose.NewSigner(jose.SigningKey{Algorithm: alg, Key: key},
		(&jose.SignerOptions{}).WithType("JWT").WithHeader("kid", rnd(b, 16)))
	if err != nil {
		b.Fatal(err)
	}
	payload, err := json.Marshal(c)
	if err != nil {
		b.Fatal(err)
	}
	jws, err := signer.Sign(payload)
	if err != nil {
		b.Fatal(err)
	}
	tok, err := jws.CompactSerialize()
	if err != nil {
		b.Fatal(err)
	}
	return tok
}

// issuerSession builds the session the gateway keeps after a login at the
// embedded issuer: ID, access and refresh token all JWTs signed with alg.
// pad > 0 grows the access token to about pad bytes (a provider with
// large tokens: many groups or roles).
func issuerSession(b testing.TB, alg jose.SignatureAlgorithm, pad int) *session.Session {
	b.Helper()
	var key any
	switch alg {
	case jose.ES256:
		k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		if err != nil {
			b.Fatal(err)
		}
		key = k
	case jose.RS256:
		k, err := rsa.GenerateKey(rand.Reader, 2048)
		if err != nil {
			b.Fatal(err)
		}
		key = k
	}
	now := time.Now().UTC()
	iss, sub, sid := "http://127.0.0.1:8081", rnd(b, 12), rnd(b, 16)
	base := claims{Iss: iss, Sub: sub, Iat: now.Unix(), AuthTime: now.Unix(), SID: sid}
	idc := base
	idc.Aud, idc.Exp, idc.Nonce, idc.AtHash, idc.Azp = "bffgate", now.Add(time.Hour).Unix(), rnd(b, 32), rnd(b, 16), "bffgate"
	idc.Name, idc.Email = "Jane Doe", "jane@example.com"
	at := base
	at.Aud, at.Exp, at.Nbf, at.JTI, at.ClientID = "bffgate", now.Add(5*time.Minute).Unix(), now.Unix(), rnd(b, 16), "bffgate"
	at.Scope, at.GrantID = "openid profile email offline_access", rnd(b, 16)
	if pad > 0 {
		at.Pad = strings.Repeat("group:engineering-platform-", pad/27*3/4)
	}
	rt := base
	rt.Aud, rt.Exp, rt.JTI, rt.ClientID, rt.GrantID = iss, now.Add(12*time.Hour).Unix(), rnd(b, 16), "bffgate", at.GrantID
	rt.Scope = at.Scope
	return &session.Session{
		Subject:        sub,
		SID:            sid,
		Issuer:         iss,
		Claims:         []byte(`{"sub":"` + sub + `","name":"Jane Doe","email":"jane@example.com","email_verified":true,"preferred_username":"jane"}`),
		IDToken:        sign(b, alg, key, idc),
		AccessToken:    sign(b, alg, key, at),
		RefreshToken:   sign(b, alg, key, rt),
		TokenType:      "Bearer",
		AccessExpiry:   now.Add(5 * time.Minute),
		Created:        now,
		LastSeen:       now,
		IdleTimeout:    30 * time.Minute,
		AbsoluteExpiry: now.Add(12 * time.Hour),
	}
}

func openDB(b testing.TB) *bbolt.DB {
	db, err := bbolt.Open(filepath.Join(b.TempDir(), "bffgate.db"), 0o600, &bbolt.Options{Timeout: 5 * time.Second})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { db.Close() })
	return db
}

func cookieStore(b testing.TB) *cookie.Store {
	key := func(n int) []byte {
		k := make([]byte, n)
		rand.Read(k)
		return k
	}
	st, err := cookie.New(cookie.Config{
		Keys:    []cookie.KeyPair{{Hash: key(32), Block: key(32)}},
		Ended:   sbolt.NewEnded(openDB(b)),
		MaxSize: 1 << 20,
	})
	if err != nil {
		b.Fatal(err)
	}
	return st
}

func boltStore(b testing.TB) *sbolt.Store {
	st, err := sbolt.New(openDB(b), sbolt.Config{})
	if err != nil {
		b.Fatal(err)
	}
	return st
}

var cases = []struct {
	name string
	alg  jose.SignatureAlgorithm
	pad  int
}{
	{"ES256", jose.ES256, 0},
	{"RS256", jose.RS256, 0},
	{"RS256-4KB-access-token", jose.RS256, 4096},
}

// BenchmarkCookieGet is the cookie store's per-request cost: verify,
// decrypt and decode the handle, and check the Ended records (one bbolt
// read each for sid/subject and for deletion).
func BenchmarkCookieGet(b *testing.B) {
	for _, tc := range cases {
		b.Run(tc.name, func(b *testing.B) {
			st := cookieStore(b)
			s := issuerSession(b, tc.alg, tc.pad)
			h, err := st.Create(b.Context(), s)
			if err != nil {
				b.Fatal(err)
			}
			b.ReportAllocs()
			for b.Loop() {
				if _, err := st.Get(b.Context(), h); err != nil {
					b.Fatal(err)
				}
			}
			// After the loop: b.Loop's timer reset drops earlier metrics.
			b.ReportMetric(float64(len(h)), "handle-bytes")
			b.ReportMetric(float64(len(s.IDToken)+len(s.AccessToken)+len(s.RefreshToken)), "token-bytes")
		})
	}
}

// BenchmarkBoltGet is the bbolt store's per-request cost: parse the
// ticket, read the record, AES-GCM open and decode, among 1,000 sessions.
func BenchmarkBoltGet(b *testing.B) {
	for _, tc := range cases {
		b.Run(tc.name, func(b *testing.B) {
			st := boltStore(b)
			s := issuerSession(b, tc.alg, tc.pad)
			var h string
			for range 1000 {
				var err error
				if h, err = st.Create(b.Context(), s); err != nil {
					b.Fatal(err)
				}
			}
			b.ReportAllocs()
			for b.Loop() {
				if _, err := st.Get(b.Context(), h); err != nil {
					b.Fatal(err)
				}
			}
			b.ReportMetric(float64(len(h)), "handle-bytes")
		})
	}
}

// BenchmarkLookupLatency is issue 8's figure: session lookups on bbolt
// next to Redis (BFFGATE_TEST_REDIS_URL), one session among 1,000, with
// the p50 and p99 of single lookups. It reports lookups/s from ns/op.
// redis-cached is the Redis store with its near cache (the gateway's
// default): after the first round every lookup is of an unchanged
// session.
func BenchmarkLookupLatency(b *testing.B) {
	stores := map[string]func(b *testing.B) session.Store{
		"bbolt": func(b *testing.B) session.Store { return boltStore(b) },
	}
	if u := os.Getenv("BFFGATE_TEST_REDIS_URL"); u != "" {
		stores["redis"] = func(b *testing.B) session.Store {
			client := redistest.Client(b)
			st, err := sredis.New(client, sredis.Config{Prefix: redistest.Prefix(b, client, "")})
			if err != nil {
				b.Fatal(err)
			}
			return st
		}
		stores["redis-cached"] = func(b *testing.B) session.Store {
			client := redistest.Client(b)
			reg := prometheus.NewRegistry()
			st, err := sredis.New(client, sredis.Config{Prefix: redistest.Prefix(b, client, ""), Registerer: reg,
				Cache: sredis.CacheConfig{Entries: sredis.DefaultCacheEntries}})
			if err != nil {
				b.Fatal(err)
			}
			ctx, cancel := context.WithCancel(context.Background())
			var wg sync.WaitGroup
			wg.Go(func() { st.Run(ctx) })
			b.Cleanup(func() { cancel(); wg.Wait() })
			for deadline := time.Now().Add(20 * time.Second); gauge(b, reg, "bffgate_session_redis_cache_verified") != 1; time.Sleep(5 * time.Millisecond) {
				if time.Now().After(deadline) {
					b.Fatal("the near cache's channel was not verified within 20 s")
				}
			}
			return st
		}
	}
	for _, name := range []string{"bbolt", "redis", "redis-cached"} {
		newStore, ok := stores[name]
		if !ok {
			continue
		}
		b.Run(name, func(b *testing.B) {
			st := newStore(b)
			s := issuerSession(b, "ES256", 0)
			var handles []string
			for range 1000 {
				h, err := st.Create(b.Context(), s)
				if err != nil {
					b.Fatal(err)
				}
				handles = append(handles, h)
			}
			var lat []time.Duration
			i := 0
			b.ReportAllocs()
			for b.Loop() {
				t0 := time.Now()
				if _, err := st.Get(b.Context(), handles[i%len(handles)]); err != nil {
					b.Fatal(err)
				}
				lat = append(lat, time.Since(t0))
				i++
			}
			slices.Sort(lat)
			b.ReportMetric(float64(lat[len(lat)/2].Microseconds()), "p50-µs")
			b.ReportMetric(float64(lat[len(lat)*99/100].Microseconds()), "p99-µs")
		})
	}
}

// gauge reads a gauge from reg (0 if absent).
func gauge(tb testing.TB, reg *prometheus.Registry, name string) float64 {
	fams, err := reg.Gather()
	if err != nil {
		tb.Fatal(err)
	}
	for _, f := range fams {
		if f.GetName() == name && len(f.GetMetric()) == 1 {
			return f.GetMetric()[0].GetGauge().GetValue()
		}
	}
	return 0
}

// countHook counts round trips to Redis: each command sent alone and each
// pipeline is one.
type countHook struct{ n atomic.Int64 }

func (h *countHook) DialHook(next goredis.DialHook) goredis.DialHook { return next }

func (h *countHook) ProcessHook(next goredis.ProcessHook) goredis.ProcessHook {
	return func(ctx context.Context, cmd goredis.Cmder) error {
		h.n.Add(1)
		return next(ctx, cmd)
	}
}

func (h *countHook) ProcessPipelineHook(next goredis.ProcessPipelineHook) goredis.ProcessPipelineHook {
	return func(ctx context.Context, cmds []goredis.Cmder) error {
		h.n.Add(1)
		return next(ctx, cmds)
	}
}

// BenchmarkCookieGetRedisEnded is the cookie store's per-request cost
// when its ended sessions live in Redis (several instances): the decode
// cache hits, and the ended-session checks ask Redis. roundtrips/op is
// the figure the machine's load does not move.
func BenchmarkCookieGetRedisEnded(b *testing.B) {
	client := redistest.Client(b)
	h := &countHook{}
	client.AddHook(h)
	key := func(n int) []byte {
		k := make([]byte, n)
		rand.Read(k)
		return k
	}
	st, err := cookie.New(cookie.Config{
		Keys:    []cookie.KeyPair{{Hash: key(32), Block: key(32)}},
		Ended:   sredis.NewEnded(client, redistest.Prefix(b, client, "session:")),
		MaxSize: 1 << 20,
	})
	if err != nil {
		b.Fatal(err)
	}
	s := issuerSession(b, jose.RS256, 0)
	hd, err := st.Create(b.Context(), s)
	if err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	n0 := h.n.Load()
	for b.Loop() {
		if _, err := st.Get(b.Context(), hd); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(h.n.Load()-n0)/float64(b.N), "roundtrips/op")
}
