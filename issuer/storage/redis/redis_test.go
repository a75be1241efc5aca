package redis

import (
	"context"
	"errors"
	"os"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	goredis "github.com/redis/go-redis/v9"

	"github.com/bffgate/bffgate/internal/redistest"
	"github.com/bffgate/bffgate/issuer/storage"
	"github.com/bffgate/bffgate/issuer/storage/storagetest"
)

func newTestStore(tb testing.TB) (*Store, goredis.UniversalClient) {
	tb.Helper()
	c := redistest.Client(tb)
	s, err := New(c, Config{Prefix: redistest.Prefix(tb, c, "")})
	if err != nil {
		tb.Fatalf("New: %v", err)
	}
	return s, c
}

func TestStore(t *testing.T) {
	storagetest.RunStoreTests(t, func(t *testing.T) storage.Store {
		s, _ := newTestStore(t)
		return s
	})
}

// TestRulesOnEngine runs the contract suite over the plain rules on the
// Engine, the login throttle included (the Store runs it as Lua scripts):
// both write the same hash.
func TestRulesOnEngine(t *testing.T) {
	storagetest.RunStoreTests(t, func(t *testing.T) storage.Store {
		c := redistest.Client(t)
		e, err := NewEngine(c, Config{Prefix: redistest.Prefix(t, c, "")})
		if err != nil {
			t.Fatal(err)
		}
		s, err := storage.NewRules(e, storage.RulesConfig{})
		if err != nil {
			t.Fatal(err)
		}
		return s
	})
}

func TestNewConfig(t *testing.T) {
	t.Parallel()
	c := goredis.NewClient(&goredis.Options{Addr: "127.0.0.1:1"})
	defer c.Close()
	for _, tc := range []struct {
		name string
		cfg  Config
		want string
	}{
		{"brace in prefix", Config{Prefix: "a{b}:"}, "Prefix"},
		{"negative grace", Config{TTLGrace: -1}, "TTLGrace"},
		{"negative retries", Config{MaxRetries: -1}, "MaxRetries"},
		{"negative batch", Config{PurgeBatch: -1}, "PurgeBatch"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if _, err := New(c, tc.cfg); err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("New(%+v) = %v, want an error naming %s", tc.cfg, err, tc.want)
			}
		})
	}
	if _, err := New(nil, Config{}); err == nil {
		t.Error("New(nil) succeeded")
	}
	ring := goredis.NewRing(&goredis.RingOptions{Addrs: map[string]string{"a": "127.0.0.1:1"}})
	defer ring.Close()
	if _, err := New(ring, Config{}); err == nil {
		t.Error("New(ring) succeeded")
	}
	s, err := New(c, Config{})
	if err != nil {
		t.Fatal(err)
	}
	if got := s.k.code("h"); got != "bffgate:{issuer}:code:h" {
		t.Errorf("default code key = %q", got)
	}
}

// TestUnavailable: a Redis that does not answer gives ErrUnavailable from
// every kind of call, never a panic.
func TestUnavailable(t *testing.T) {
	t.Parallel()
	c := goredis.NewClient(&goredis.Options{Addr: "127.0.0.1:1", MaxRetries: -1, DialerRetries: 1, DialTimeout: 200 * time.Millisecond})
	defer c.Close()
	s, err := New(c, Config{})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	now := time.Now()
	checks := map[string]error{
		"Ping": s.Ping(ctx),
		"Denied": func() error {
			_, err := s.Denied(ctx, storage.DenyJTI, "x")
			return err
		}(),
		"RotateRefresh": s.RotateRefresh(ctx, "x", true, now, func(storage.RefreshToken) (storage.Issued, error) {
			return storage.Issued{}, nil
		}),
		"RevokeGrant": s.RevokeGrant(ctx, "g", now.Add(time.Hour), now),
		"Secret": func() error {
			_, err := s.Secret(ctx, "n", func() ([]byte, error) { return []byte("x"), nil })
			return err
		}(),
		"DenylistChanges": func() error {
			_, _, err := s.DenylistChanges(ctx, 0, 10)
			return err
		}(),
		"Subscribe": s.Subscribe(ctx, func(storage.DenyEntry) {}),
		"RecordLoginFailure": func() error {
			_, err := s.RecordLoginFailure(ctx, "u:k", now, storage.LoginPolicy{MaxFailures: 1, Window: time.Minute, Lockout: time.Minute, MaxLockout: time.Minute})
			return err
		}(),
		"LoginFailures": func() error {
			_, err := s.LoginFailures(ctx, "u:k", now)
			return err
		}(),
		"ResetLoginFailures": func() error {
			_, err := s.ResetLoginFailures(ctx, "u:k", now)
			return err
		}(),
	}
	for name, err := range checks {
		if !errors.Is(err, storage.ErrUnavailable) {
			t.Errorf("%s on unreachable Redis = %v, want ErrUnavailable", name, err)
		}
	}
	// A closed client is unavailable too.
	c2 := redistest.Client(t)
	s2, _ := New(c2, Config{Prefix: redistest.Prefix(t, c2, "")})
	c3, _ := goredis.ParseURL(os.Getenv("BFFGATE_TEST_REDIS_URL"))
	closed := goredis.NewClient(c3)
	closed.Close()
	s3, _ := New(closed, Config{})
	if err := s3.Ping(ctx); !errors.Is(err, storage.ErrUnavailable) {
		t.Errorf("Ping on a closed client = %v, want ErrUnavailable", err)
	}
	// A contract error is not unavailability.
	if err := s2.RotateRefresh(ctx, "none", true, now, nil); errors.Is(err, storage.ErrUnavailable) || !errors.Is(err, storage.ErrNotFound) {
		t.Errorf("RotateRefresh(unknown) = %v, want ErrNotFound only", err)
	}
}

// TestSubscribe: a denylist write on one Store reaches the subscriber of
// another Store on the same prefix (another issuer instance) by push.
func TestSubscribe(t *testing.T) {
	t.Parallel()
	a, c := newTestStore(t)
	b, err := New(c, Config{Prefix: a.cfg.Prefix})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	got := make(chan storage.DenyEntry, 4)
	if err := b.Subscribe(ctx, func(e storage.DenyEntry) { got <- e }); err != nil {
		t.Fatalf("Subscribe: %v", err)
	}
	now := time.Now().Truncate(time.Millisecond).UTC()
	if err := a.RevokeAccessToken(ctx, "jti with spaces", "", now.Add(time.Hour), now); err != nil {
		t.Fatal(err)
	}
	if err := a.RevokeGrant(ctx, "g1", now.Add(2*time.Hour), now); err != nil {
		t.Fatal(err)
	}
	want := []storage.DenyEntry{
		{Kind: storage.DenyJTI, ID: "jti with spaces", Until: now.Add(time.Hour)},
		{Kind: storage.DenyGrant, ID: "g1", Until: now.Add(2 * time.Hour)},
	}
	for _, w := range want {
		select {
		case e := <-got:
			if e.Kind != w.Kind || e.ID != w.ID || !e.Until.Equal(w.Until) {
				t.Fatalf("pushed %+v, want %+v", e, w)
			}
		case <-time.After(10 * time.Second):
			t.Fatalf("no push of %+v within 10s", w)
		}
	}
	// An entry already denylisted until later is not pushed again.
	if err := a.RevokeAccessToken(ctx, "jti with spaces", "", now.Add(time.Minute), now); err != nil {
		t.Fatal(err)
	}
	if _, _, err := a.DenylistChanges(ctx, 0, 0); err != nil {
		t.Fatal(err)
	}
}

// TestRotationRaceAcrossClients races one refresh token on two Stores
// with their own connection pools (two issuer instances): exactly one
// rotation wins.
func TestRotationRaceAcrossClients(t *testing.T) {
	t.Parallel()
	a, _ := newTestStore(t)
	c2 := redistest.Client(t)
	b, err := New(c2, Config{Prefix: a.cfg.Prefix})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	now := time.Now().Truncate(time.Millisecond).UTC()
	exp := now.Add(time.Hour)
	for round := range 20 {
		g := "g" + string(rune('a'+round))
		code := storage.AuthCode{Hash: "code-" + g, ClientID: "c", SID: "sid", ExpiresAt: exp}
		if err := a.CreateCode(ctx, code); err != nil {
			t.Fatal(err)
		}
		if _, err := a.RedeemCode(ctx, code.Hash, now, func(c storage.AuthCode) (storage.Issued, error) {
			return storage.Issued{
				Grant:   &storage.Grant{ID: g, SID: "sid", ExpiresAt: exp},
				Refresh: &storage.RefreshToken{JTI: g + "-r0", GrantID: g, ExpiresAt: exp},
			}, nil
		}); err != nil {
			t.Fatal(err)
		}
		var wg sync.WaitGroup
		errs := make([]error, 2)
		for i, s := range []*Store{a, b} {
			wg.Go(func() {
				errs[i] = s.RotateRefresh(ctx, g+"-r0", true, now, func(old storage.RefreshToken) (storage.Issued, error) {
					r := old
					r.JTI = g + "-r1-" + string(rune('a'+i))
					return storage.Issued{Refresh: &r}, nil
				})
			})
		}
		wg.Wait()
		wins := 0
		for _, err := range errs {
			switch {
			case err == nil:
				wins++
			case !errors.Is(err, storage.ErrNotFound):
				t.Fatalf("round %d: %v", round, err)
			}
		}
		if wins != 1 {
			t.Fatalf("round %d: %d winners, want 1 (%v)", round, wins, errs)
		}
	}
}

// TestTTLs: every record carries a Redis TTL, so Redis does not grow when
// no instance purges.
func TestTTLs(t *testing.T) {
	t.Parallel()
	s, c := newTestStore(t)
	ctx := context.Background()
	now := time.Now().Truncate(time.Millisecond).UTC()
	exp := now.Add(time.Hour)
	code := storage.AuthCode{Hash: "h", ClientID: "c", SID: "sid", ExpiresAt: exp}
	if err := s.CreateCode(ctx, code); err != nil {
		t.Fatal(err)
	}
	if _, err := s.RedeemCode(ctx, "h", now, func(storage.AuthCode) (storage.Issued, error) {
		return storage.Issued{
			Grant:   &storage.Grant{ID: "g", SID: "sid", ExpiresAt: exp},
			Refresh: &storage.RefreshToken{JTI: "r", GrantID: "g", ExpiresAt: exp},
		}, nil
	}); err != nil {
		t.Fatal(err)
	}
	if err := s.RevokeAccessToken(ctx, "at", "", exp, now); err != nil {
		t.Fatal(err)
	}
	if err := s.CreateLoginSession(ctx, storage.LoginSession{ID: "ls", ExpiresAt: exp}); err != nil {
		t.Fatal(err)
	}
	// A login-throttle key lives Window past its count's start, here 1h.
	if _, err := s.RecordLoginFailure(ctx, "u:k", now, storage.LoginPolicy{MaxFailures: 5, Window: time.Hour, Lockout: time.Minute, MaxLockout: time.Minute}); err != nil {
		t.Fatal(err)
	}
	// A client assertion's replay record lives as long as the assertion.
	if err := s.UseAssertion(ctx, "jwt:digest", exp, now); err != nil {
		t.Fatal(err)
	}
	for _, key := range []string{s.k.code("h"), s.k.grant("g"), s.k.refresh("r"), s.k.grantRefresh("g"), s.k.sidGrants("sid"), s.k.deny(storage.DenyJTI, "at"), s.k.login("ls"), s.k.loginFailures("u:k"), s.k.assertion("jwt:digest")} {
		ttl, err := c.PTTL(ctx, key).Result()
		if err != nil {
			t.Fatal(err)
		}
		if ttl <= 0 || ttl > time.Hour+s.cfg.TTLGrace+time.Minute {
			t.Errorf("TTL of %s = %v, want about 1h + grace", key, ttl)
		}
	}
	// The client states are one record without expiry: a disable holds
	// until an operator enables the client.
	if _, err := s.SetClientDisabled(ctx, "agent", true, now); err != nil {
		t.Fatal(err)
	}
	if ttl, err := c.PTTL(ctx, s.k.clients("states")).Result(); err != nil || ttl != -1 {
		t.Errorf("TTL of %s = %v, %v; want none (-1)", s.k.clients("states"), ttl, err)
	}
	// Purge removes the replay record once its assertion expired.
	if _, err := s.Purge(ctx, exp.Add(time.Second)); err != nil {
		t.Fatal(err)
	}
	if n, err := c.Exists(ctx, s.k.assertion("jwt:digest")).Result(); err != nil || n != 0 {
		t.Errorf("replay record after Purge past its expiry: exists %d, %v", n, err)
	}
}

// TestSequenceFloor: the change log's sequence starts at the clock, so a
// Redis restarted empty does not hand out sequence numbers below the
// cursors that instances hold.
func TestSequenceFloor(t *testing.T) {
	t.Parallel()
	c := redistest.Client(t)
	clock := time.Now()
	s, err := New(c, Config{Prefix: redistest.Prefix(t, c, ""), Now: func() time.Time { return clock }})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	if err := s.RevokeAccessToken(ctx, "a", "", clock.Add(time.Hour), clock); err != nil {
		t.Fatal(err)
	}
	_, cur, err := s.DenylistChanges(ctx, 0, 0)
	if err != nil {
		t.Fatal(err)
	}
	if want := storage.Cursor(clock.UnixMilli() * 1000); cur < want {
		t.Fatalf("first cursor %d, want at least %d", cur, want)
	}
	// "Restart empty": drop everything, move the clock on a second.
	c.Del(ctx, s.k.denyseq(), s.k.denylog(), s.k.deny(storage.DenyJTI, "a"))
	clock = clock.Add(time.Second)
	if err := s.RevokeAccessToken(ctx, "b", "", clock.Add(time.Hour), clock); err != nil {
		t.Fatal(err)
	}
	got, _, err := s.DenylistChanges(ctx, cur, 0)
	if err != nil || len(got) != 1 || got[0].ID != "b" {
		t.Fatalf("changes after the old cursor = %+v, %v; want the new entry", got, err)
	}
}

func FuzzDecodeLogMember(f *testing.F) {
	f.Add("1 2 jti x")
	f.Add("")
	f.Add("1 -5 grant a b c")
	f.Fuzz(func(t *testing.T, m string) {
		seq, e, err := decodeLogMember(m)
		if err != nil {
			return
		}
		// A decoded member encodes back to itself.
		back := encodeEntry(e)
		if !strings.HasSuffix(m, back) || seq == 0 && !strings.HasPrefix(m, "0") {
			t.Fatalf("%q decoded to %d %+v, which encodes as %q", m, seq, e, back)
		}
	})
}

func BenchmarkRotateRefresh(b *testing.B) {
	s, _ := newTestStore(b)
	ctx := context.Background()
	now := time.Now().Truncate(time.Millisecond).UTC()
	exp := now.Add(time.Hour)
	code := storage.AuthCode{Hash: "h", ClientID: "c", SID: "sid", ExpiresAt: exp}
	if err := s.CreateCode(ctx, code); err != nil {
		b.Fatal(err)
	}
	if _, err := s.RedeemCode(ctx, "h", now, func(storage.AuthCode) (storage.Issued, error) {
		return storage.Issued{
			Grant:   &storage.Grant{ID: "g", SID: "sid", ExpiresAt: exp},
			Refresh: &storage.RefreshToken{JTI: "r0", GrantID: "g", ExpiresAt: exp},
		}, nil
	}); err != nil {
		b.Fatal(err)
	}
	jti := "r0"
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; b.Loop(); i++ {
		next := "r" + strconv.Itoa(i+1)
		if err := s.RotateRefresh(ctx, jti, true, now, func(old storage.RefreshToken) (storage.Issued, error) {
			r := old
			r.JTI = next
			return storage.Issued{Refresh: &r}, nil
		}); err != nil {
			b.Fatal(err)
		}
		jti = next
	}
}

func BenchmarkDenied(b *testing.B) {
	s, _ := newTestStore(b)
	ctx := context.Background()
	b.ReportAllocs()
	for b.Loop() {
		if _, err := s.Denied(ctx, storage.DenyJTI, "live-token"); err != nil {
			b.Fatal(err)
		}
	}
}
