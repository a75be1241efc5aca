package denylist

import (
	"context"
	"errors"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	bbolt "go.etcd.io/bbolt"

	"github.com/bffgate/bffgate/internal/datafile"
	"github.com/bffgate/bffgate/issuer/storage"
	"github.com/bffgate/bffgate/issuer/storage/bolt"
)

func newStore(t testing.TB) (*bolt.Store, *bbolt.DB) {
	t.Helper()
	db, err := datafile.Open(filepath.Join(t.TempDir(), "bffgate.db"), time.Second)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	s, err := bolt.New(db, bolt.Config{})
	if err != nil {
		t.Fatal(err)
	}
	return s, db
}

// clock is a settable test clock.
type clock struct {
	mu  sync.Mutex
	now time.Time
}

func (c *clock) Now() time.Time  { c.mu.Lock(); defer c.mu.Unlock(); return c.now }
func (c *clock) Set(t time.Time) { c.mu.Lock(); c.now = t; c.mu.Unlock() }

// value reads a counter or gauge.
func value(m prometheus.Metric) float64 {
	var d dto.Metric
	if err := m.Write(&d); err != nil {
		panic(err)
	}
	if d.Counter != nil {
		return d.Counter.GetValue()
	}
	return d.Gauge.GetValue()
}

func newList(t *testing.T, cfg Config) (*List, *prometheus.Registry) {
	t.Helper()
	reg := prometheus.NewRegistry()
	cfg.Registerer = reg
	l, err := New(cfg)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	return l, reg
}

func TestNewConfig(t *testing.T) {
	t.Parallel()
	s, _ := newStore(t)
	tests := []struct {
		name    string
		cfg     Config
		wantErr string
	}{
		{"no store", Config{}, "Config.Store"},
		{"negative cache", Config{Store: s, CacheSize: -1}, "Config.CacheSize"},
		{"negative poll", Config{Store: s, PollInterval: -time.Second}, "Config.PollInterval"},
		{"defaults", Config{Store: s}, ""},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			l, err := New(tc.cfg)
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("New = %v, want an error naming %s", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			def := DefaultConfig()
			if l.cfg.CacheSize != def.CacheSize || l.cfg.PollInterval != def.PollInterval {
				t.Fatalf("defaults not filled: %+v", l.cfg)
			}
		})
	}
	// A second List on one registry cannot register its metrics.
	reg := prometheus.NewRegistry()
	if _, err := New(Config{Store: s, Registerer: reg}); err != nil {
		t.Fatal(err)
	}
	if _, err := New(Config{Store: s, Registerer: reg}); err == nil {
		t.Fatal("second List on one registry: no error")
	}
}

// TestTwoInstances is the poll test: two issuer instances in one
// process share one store; a revocation made through A reaches B's cache
// by B's poll.
func TestTwoInstances(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	s, db := newStore(t)
	now := time.Now()
	a, _ := newList(t, Config{Store: s})
	b, _ := newList(t, Config{Store: s})
	if err := b.Poll(ctx); err != nil {
		t.Fatal(err)
	}

	// A revokes: store write, then Add.
	e1 := storage.DenyEntry{Kind: storage.DenyJTI, ID: "at1", Until: now.Add(time.Hour)}
	if err := s.RevokeAccessToken(ctx, e1.ID, "g1", e1.Until, now); err != nil {
		t.Fatal(err)
	}
	a.Add(e1)
	if d, err := a.Denied(ctx, "at1", "g1"); err != nil || !d {
		t.Fatalf("A.Denied(at1) = %v, %v", d, err)
	}
	if h := value(a.hits); h != 1 {
		t.Fatalf("A hits = %v, want 1 (Add caches at once)", h)
	}

	// B learns of it by polling: its check is then a cache hit.
	if err := b.Poll(ctx); err != nil {
		t.Fatal(err)
	}
	if d, err := b.Denied(ctx, "at1", ""); err != nil || !d {
		t.Fatalf("B.Denied(at1) after poll = %v, %v", d, err)
	}
	if h, m := value(b.hits), value(b.misses); h != 1 || m != 0 {
		t.Fatalf("B hits/misses = %v/%v, want 1/0", h, m)
	}

	// A grant revocation on A, seen by B after the next poll, for any
	// token of the grant.
	if err := s.RevokeGrant(ctx, "g2", now.Add(time.Hour), now); err != nil {
		t.Fatal(err)
	}
	a.Add(storage.DenyEntry{Kind: storage.DenyGrant, ID: "g2", Until: now.Add(time.Hour)})
	if err := b.Poll(ctx); err != nil {
		t.Fatal(err)
	}
	if g := value(b.entries); g != 2 {
		t.Fatalf("B cache entries = %v, want 2", g)
	}

	// With the store gone, B still refuses what it has cached, and fails
	// closed (an error, not "not denied") for what it has not.
	db.Close()
	if d, err := b.Denied(ctx, "any-token-of-g2", "g2"); err != nil || !d {
		t.Fatalf("B.Denied(grant g2) with the store down = %v, %v; want a cache hit", d, err)
	}
	if d, err := b.Denied(ctx, "live", "g-live"); err == nil || d {
		t.Fatalf("B.Denied(live) with the store down = %v, %v; want an error", d, err)
	} else if !errors.Is(err, storage.ErrUnavailable) {
		t.Fatalf("error = %v, want it to wrap storage.ErrUnavailable", err)
	}
	if err := b.Poll(ctx); err == nil {
		t.Fatal("Poll with the store down: no error")
	}
	if n := value(b.pollErrors); n != 1 {
		t.Fatalf("poll errors = %v, want 1", n)
	}
}

func TestLiveTokenIsMiss(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	s, _ := newStore(t)
	l, _ := newList(t, Config{Store: s})
	for _, q := range [][2]string{{"live", "g"}, {"live", ""}, {"", ""}} {
		if d, err := l.Denied(ctx, q[0], q[1]); err != nil || d {
			t.Fatalf("Denied(%q, %q) = %v, %v; want false", q[0], q[1], d, err)
		}
	}
	if m := value(l.misses); m != 3 {
		t.Fatalf("misses = %v, want 3", m)
	}
}

// TestEviction: a denied id evicted from the full cache is still denied
// (found in the store) and comes back into the cache.
func TestEviction(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	s, _ := newStore(t)
	now := time.Now()
	l, _ := newList(t, Config{Store: s, CacheSize: 2})
	for _, id := range []string{"j1", "j2", "j3"} {
		if err := s.RevokeAccessToken(ctx, id, "", now.Add(time.Hour), now); err != nil {
			t.Fatal(err)
		}
	}
	if err := l.Poll(ctx); err != nil {
		t.Fatal(err)
	}
	if g := value(l.entries); g != 2 {
		t.Fatalf("cache entries = %v, want 2 (the bound)", g)
	}
	for i, id := range []string{"j1", "j1", "j2", "j3"} {
		if d, err := l.Denied(ctx, id, ""); err != nil || !d {
			t.Fatalf("check %d: Denied(%s) = %v, %v; want true", i, id, d, err)
		}
	}
	// j1 was evicted: one miss, then cached (evicting j2), hit; j2 was then
	// evicted: miss; j3 evicted by j2's return: miss.
	if h, m := value(l.hits), value(l.misses); h != 1 || m != 3 {
		t.Fatalf("hits/misses = %v/%v, want 1/3", h, m)
	}
	if g := value(l.entries); g != 2 {
		t.Fatalf("cache entries = %v, want 2", g)
	}
}

// TestPollDropsExpired: a poll drops the entries expired at the clock
// from the cache. The store keeps them until the issuer's purge job runs,
// so a check of an expired id reads the store.
func TestPollDropsExpired(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	s, _ := newStore(t)
	now := time.Now()
	clk := &clock{now: now}
	l, _ := newList(t, Config{Store: s, Now: clk.Now})
	for id, until := range map[string]time.Time{"soon": now.Add(time.Minute), "later": now.Add(time.Hour)} {
		if err := s.RevokeAccessToken(ctx, id, "", until, now); err != nil {
			t.Fatal(err)
		}
	}
	if err := l.Poll(ctx); err != nil {
		t.Fatal(err)
	}
	if g := value(l.entries); g != 2 {
		t.Fatalf("cache entries = %v, want 2", g)
	}
	clk.Set(now.Add(10 * time.Minute))
	if err := l.Poll(ctx); err != nil {
		t.Fatal(err)
	}
	if g := value(l.entries); g != 1 {
		t.Fatalf("cache entries after the poll past one Until = %v, want 1", g)
	}
	misses := value(l.misses)
	if d, err := l.Denied(ctx, "soon", ""); err != nil || !d {
		t.Fatalf("expired entry not yet purged from the store: Denied = %v, %v; want true", d, err)
	}
	if m := value(l.misses); m != misses+1 {
		t.Fatalf("the expired entry was answered from the cache (misses %v -> %v)", misses, m)
	}
}

// signalStore is the real store with a notification on each poll, so the
// Run test can wait for them instead of sleeping.
type signalStore struct {
	storage.Store
	polled chan struct{}
}

func (s signalStore) DenylistChanges(ctx context.Context, after storage.Cursor, limit int) ([]storage.DenyEntry, storage.Cursor, error) {
	defer notify(s.polled)
	return s.Store.DenylistChanges(ctx, after, limit)
}

func notify(c chan struct{}) {
	select {
	case c <- struct{}{}:
	default:
	}
}

// chanSubscriber pushes entries sent on its channel, as the Redis store's
// pub/sub does.
type chanSubscriber chan storage.DenyEntry

func (c chanSubscriber) Subscribe(ctx context.Context, fn func(storage.DenyEntry)) error {
	go func() {
		for {
			select {
			case <-ctx.Done():
				return
			case e := <-c:
				fn(e)
			}
		}
	}()
	return nil
}

func TestRun(t *testing.T) {
	t.Parallel()
	s, _ := newStore(t)
	ss := signalStore{Store: s, polled: make(chan struct{})}
	sub := make(chanSubscriber)
	now := time.Now()
	if err := s.RevokeAccessToken(context.Background(), "before", "", now.Add(time.Hour), now); err != nil {
		t.Fatal(err)
	}
	l, _ := newList(t, Config{Store: ss, PollInterval: time.Millisecond, Subscriber: sub})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { l.Run(ctx); close(done) }()
	for range 3 { // the first poll, then ticks
		<-ss.polled
	}
	sub <- storage.DenyEntry{Kind: storage.DenyJTI, ID: "pushed", Until: now.Add(time.Hour)}
	// The subscriber handles entries one at a time: once it has taken the
	// next one, the first has been added (a send alone returns before).
	sub <- storage.DenyEntry{Kind: storage.DenyJTI, ID: "sync", Until: now.Add(time.Hour)}
	cancel()
	<-done
	// Both come from the cache: the pushed one never reached the store.
	for _, id := range []string{"before", "pushed"} {
		if d, err := l.Denied(context.Background(), id, ""); err != nil || !d {
			t.Fatalf("Denied(%s) after Run = %v, %v", id, d, err)
		}
	}
	if h := value(l.hits); h != 2 {
		t.Fatalf("hits = %v, want 2", h)
	}
}

func TestLRU(t *testing.T) {
	t.Parallel()
	now := time.Now()
	c := newLRU(3)
	c.put("a", now.Add(time.Minute))
	c.put("b", time.Time{})
	c.put("c", now.Add(time.Hour))
	c.get("a") // a is now the most recent; b the least
	c.put("d", now.Add(time.Hour))
	if c.get("b") || !c.get("a") || !c.get("c") || !c.get("d") || c.len() != 3 {
		t.Fatal("LRU evicted the wrong entry")
	}
	c.put("a", now) // an earlier Until does not shorten the entry
	c.dropExpired(now.Add(30 * time.Second))
	if !c.get("a") {
		t.Fatal("put with an earlier Until shortened the entry")
	}
	c.dropExpired(now.Add(2 * time.Hour))
	if c.len() != 0 {
		t.Fatalf("dropExpired left %d entries", c.len())
	}
}
