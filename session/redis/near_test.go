package redis

import (
	"context"
	"errors"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	goredis "github.com/redis/go-redis/v9"

	"github.com/bffgate/bffgate/e2e/redisserver"
	"github.com/bffgate/bffgate/internal/redistest"
	"github.com/bffgate/bffgate/session"
	"github.com/bffgate/bffgate/session/codec"
	"github.com/bffgate/bffgate/session/sessiontest"
)

// testStaleness is the tests' MaxStaleness: above the default, so that a
// test that wants its reads served from the cache still gets them on a
// machine busy enough to hold the prober back for a second.
const testStaleness = 3 * time.Second

// cached returns a Store with the near cache on client under prefix, its
// listener running until the test ends, once the channel is verified.
func cached(tb testing.TB, client goredis.UniversalClient, prefix string, now func() time.Time, reg prometheus.Registerer) *Store {
	tb.Helper()
	s, err := New(client, Config{Prefix: prefix, Now: now, Registerer: reg,
		Cache: CacheConfig{Entries: DefaultCacheEntries, MaxStaleness: testStaleness}})
	if err != nil {
		tb.Fatalf("New: %v", err)
	}
	run(tb, s)
	waitVerified(tb, s, 0)
	return s
}

// run runs s's listener until the test ends.
func run(tb testing.TB, s *Store) {
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Go(func() { s.Run(ctx) })
	tb.Cleanup(func() { cancel(); wg.Wait() })
}

// waitVerified waits until s's channel carried a probe sent at or after
// since (UnixNano; 0: any): every write committed before since has been
// heard. It waits for an event, not for a time: the bound is generous.
func waitVerified(tb testing.TB, s *Store, since int64) {
	tb.Helper()
	waitUntil(tb, "the invalidation channel verified", func() bool {
		v := s.e.near.verified.Load()
		return v != 0 && v >= since
	})
}

func waitUntil(tb testing.TB, what string, cond func() bool) {
	tb.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			tb.Fatalf("%s: not within 20 s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// value reads a counter.
func value(c prometheus.Collector) float64 {
	ch := make(chan prometheus.Metric, 1)
	c.Collect(ch)
	var m dto.Metric
	if err := (<-ch).Write(&m); err != nil {
		panic(err)
	}
	return m.GetCounter().GetValue()
}

// recordGets counts the GETs of session records a client sends.
type recordGets struct{ n atomic.Int64 }

func (h *recordGets) DialHook(next goredis.DialHook) goredis.DialHook { return next }
func (h *recordGets) ProcessHook(next goredis.ProcessHook) goredis.ProcessHook {
	return func(ctx context.Context, cmd goredis.Cmder) error {
		if args := cmd.Args(); cmd.Name() == "get" && len(args) == 2 && strings.Contains(args[1].(string), ":r:") {
			h.n.Add(1)
		}
		return next(ctx, cmd)
	}
}
func (h *recordGets) ProcessPipelineHook(next goredis.ProcessPipelineHook) goredis.ProcessPipelineHook {
	return next
}

// TestStoreCached runs the store contract on the Redis store with its
// near cache on and verified.
func TestStoreCached(t *testing.T) {
	sessiontest.RunStoreTests(t, func(t *testing.T, now func() time.Time) session.Store {
		c := redistest.Client(t)
		return cached(t, c, redistest.Prefix(t, c, "session:"), now, nil)
	})
}

// TestCachedGetCostsNoRoundTrip: the first read of a session goes to
// Redis; the next reads of the unchanged session send nothing.
func TestCachedGetCostsNoRoundTrip(t *testing.T) {
	t.Parallel()
	c := redistest.Client(t)
	gets := &recordGets{}
	c.AddHook(gets)
	reg := prometheus.NewRegistry()
	s := cached(t, c, redistest.Prefix(t, c, "session:"), nil, reg)
	ctx := t.Context()
	h, err := s.Create(ctx, sessiontest.Sample(time.Now(), 1))
	if err != nil {
		t.Fatal(err)
	}
	for i := range 10 {
		got, err := s.Get(ctx, h)
		if err != nil || got.Subject != "user-1" {
			t.Fatalf("Get %d: %+v, %v", i, got, err)
		}
	}
	if n := gets.n.Load(); n != 1 {
		t.Errorf("10 reads of an unchanged session sent %d GETs of its record, want 1", n)
	}
	if hits := value(s.e.near.hits); hits != 9 {
		t.Errorf("bffgate_session_redis_cache_hits_total = %v, want 9", hits)
	}
	fams, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	names := map[string]bool{}
	for _, f := range fams {
		names[f.GetName()] = true
	}
	for _, n := range []string{"bffgate_session_redis_cache_hits_total", "bffgate_session_redis_cache_misses_total",
		"bffgate_session_redis_cache_invalidations_total", "bffgate_session_redis_cache_entries", "bffgate_session_redis_cache_verified",
		"bffgate_session_redis_cache_drops_total", "bffgate_session_redis_operations_total"} {
		if !names[n] {
			t.Errorf("metric %s is not registered", n)
		}
	}
	// An update reads and writes Redis, and the next read reads the new
	// record once.
	if _, err := s.Update(ctx, h, func(cur *session.Session) error { cur.AccessToken = "next"; return nil }); err != nil {
		t.Fatal(err)
	}
	waitUntil(t, "the update's invalidation heard", func() bool { return value(s.e.near.invalidations) == 1 })
	for range 3 {
		if got, err := s.Get(ctx, h); err != nil || got.AccessToken != "next" {
			t.Fatalf("Get after Update: %+v, %v", got, err)
		}
	}
	// 1 before, the update's own read (WATCH, GET), 1 after.
	if n := gets.n.Load(); n != 3 {
		t.Errorf("reads around an update sent %d record GETs in all, want 3", n)
	}
}

// TestWriteOnOneInstanceSeenByAnother: two gateway instances (two clients,
// two stores with caches) share one Redis. Every write through A (update,
// delete, end by sid, end by subject) is seen by B's next read once B has
// verified its channel past the write: B never serves the record the write
// replaced. The bound holds also when B's clock is moved past
// MaxStaleness without waiting for anything: B then bypasses its cache.
func TestWriteOnOneInstanceSeenByAnother(t *testing.T) {
	t.Parallel()
	ca, cb := redistest.Client(t), redistest.Client(t)
	prefix := redistest.Prefix(t, ca, "session:")
	a, b := cached(t, ca, prefix, nil, nil), cached(t, cb, prefix, nil, nil)
	ctx := t.Context()

	for _, tc := range []struct {
		name  string
		write func(h string) error
		gone  bool
	}{
		{"update", func(h string) error {
			_, err := a.Update(ctx, h, func(cur *session.Session) error { cur.AccessToken = "rotated"; return nil })
			return err
		}, false},
		{"delete (logout)", func(h string) error { return a.Delete(ctx, h) }, true},
		{"end by sid (back-channel logout)", func(string) error { _, err := a.EndBySID(ctx, "sid-1"); return err }, true},
		{"end by subject", func(string) error { _, err := a.EndBySubject(ctx, "user-1"); return err }, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h, err := a.Create(ctx, sessiontest.Sample(time.Now(), 1))
			if err != nil {
				t.Fatal(err)
			}
			hits := value(b.e.near.hits)
			for range 2 {
				if _, err := b.Get(ctx, h); err != nil {
					t.Fatal(err)
				}
			}
			if value(b.e.near.hits) != hits+1 {
				t.Fatal("B did not serve the second read from its cache")
			}
			if err := tc.write(h); err != nil {
				t.Fatal(err)
			}
			waitVerified(t, b, time.Now().UnixNano())
			got, err := b.Get(ctx, h)
			switch {
			case tc.gone && !errors.Is(err, session.ErrNotFound):
				t.Fatalf("B after A's %s: %+v, %v; want not found", tc.name, got, err)
			case !tc.gone && (err != nil || got.AccessToken != "rotated"):
				t.Fatalf("B after A's %s: %+v, %v; want the new record", tc.name, got, err)
			}
		})
	}
}

// TestStalenessBound: with B's clock at MaxStaleness past A's write, B's
// very next read is right, whether or not the invalidation has reached B:
// its cache is only used while a probe sent less than MaxStaleness ago was
// heard.
func TestStalenessBound(t *testing.T) {
	t.Parallel()
	clock := sessiontest.NewClock(sessiontest.Start())
	ca, cb := redistest.Client(t), redistest.Client(t)
	prefix := redistest.Prefix(t, ca, "session:")
	a, b := cached(t, ca, prefix, clock.Now, nil), cached(t, cb, prefix, clock.Now, nil)
	ctx := t.Context()
	for round := range 5 {
		h, err := a.Create(ctx, sessiontest.Sample(clock.Now(), 1))
		if err != nil {
			t.Fatal(err)
		}
		waitVerified(t, b, clock.Now().UnixNano())
		for range 2 {
			if _, err := b.Get(ctx, h); err != nil {
				t.Fatalf("round %d: %v", round, err)
			}
		}
		if err := a.Delete(ctx, h); err != nil {
			t.Fatal(err)
		}
		clock.Advance(testStaleness)
		if got, err := b.Get(ctx, h); !errors.Is(err, session.ErrNotFound) {
			t.Fatalf("round %d: B at MaxStaleness after A's logout: %+v, %v; want not found", round, got, err)
		}
	}
}

// TestCacheBounds: the cache holds at most its configured entries, and an
// entry is never served past its record's own expiry (Redis's TTL).
func TestCacheBounds(t *testing.T) {
	t.Parallel()
	clock := sessiontest.NewClock(sessiontest.Start())
	c := redistest.Client(t)
	s, err := New(c, Config{Prefix: redistest.Prefix(t, c, "session:"), Now: clock.Now, Cache: CacheConfig{Entries: 64}})
	if err != nil {
		t.Fatal(err)
	}
	run(t, s)
	waitVerified(t, s, 0)
	ctx := t.Context()
	var ids [][]byte
	for i := range 300 {
		h, err := s.Create(ctx, sessiontest.Sample(clock.Now(), i))
		if err != nil {
			t.Fatal(err)
		}
		if _, err := s.Get(ctx, h); err != nil {
			t.Fatal(err)
		}
		tk, _ := codec.ParseTicket(h)
		ids = append(ids, tk.IDBytes())
	}
	if n := s.e.near.len(); n > 64 || n == 0 {
		t.Errorf("cache of 64 entries holds %d after 300 sessions", n)
	}

	sess := sessiontest.Sample(clock.Now(), 1)
	h, err := s.Create(ctx, sess)
	if err != nil {
		t.Fatal(err)
	}
	tk, _ := codec.ParseTicket(h)
	if _, err := s.Get(ctx, h); err != nil {
		t.Fatal(err)
	}
	if rec, _ := s.e.near.get(tk.IDBytes()); rec == nil {
		t.Fatal("the session is not cached after a read")
	}
	clock.Advance(sess.ExpiresAt().Sub(clock.Now()))
	waitVerified(t, s, clock.Now().UnixNano()) // the cache serves at the new time
	if rec, _ := s.e.near.get(tk.IDBytes()); rec != nil {
		t.Error("the cache serves a record at its expiry")
	}
}

// TestCacheDroppedWhenChannelLost runs a redis-server of the test's own and
// does to it what breaks the invalidation channel: emptying it (FLUSHALL
// publishes nothing), stopping it, starting it again empty, freezing it.
// Each time the cache is emptied and bypassed until the channel is back,
// so no session outlives its record.
func TestCacheDroppedWhenChannelLost(t *testing.T) {
	t.Parallel()
	rs := redisserver.Start(t)
	client := goredis.NewClient(&goredis.Options{Addr: strings.TrimSuffix(strings.TrimPrefix(rs.URL(), "redis://"), "/0"),
		MaxRetries: -1, DialTimeout: time.Second, ReadTimeout: time.Second, WriteTimeout: time.Second})
	t.Cleanup(func() { client.Close() })
	s := cached(t, client, "", nil, nil)
	ctx := t.Context()
	login := func() string {
		t.Helper()
		h, err := s.Create(ctx, sessiontest.Sample(time.Now(), 1))
		if err != nil {
			t.Fatal(err)
		}
		hits := value(s.e.near.hits)
		for range 2 {
			if _, err := s.Get(ctx, h); err != nil {
				t.Fatal(err)
			}
		}
		if value(s.e.near.hits) != hits+1 {
			t.Fatal("the session is not served from the cache")
		}
		return h
	}
	drops := func(reason string) float64 { return value(s.e.near.drops.WithLabelValues(reason)) }

	t.Run("emptied", func(t *testing.T) {
		h := login()
		rs.Flush()
		flushed := time.Now().UnixNano()
		waitVerified(t, s, flushed)
		if got, err := s.Get(ctx, h); !errors.Is(err, session.ErrNotFound) {
			t.Fatalf("after FLUSHALL: %+v, %v; want not found", got, err)
		}
		if drops("emptied") == 0 {
			t.Error("no drop counted with reason emptied")
		}
	})

	t.Run("stopped and restarted empty", func(t *testing.T) {
		h := login()
		rs.Stop()
		waitUntil(t, "the channel lost", func() bool { return s.e.near.verified.Load() == 0 })
		if _, err := s.Get(ctx, h); !errors.Is(err, session.ErrUnavailable) {
			t.Fatalf("Redis stopped: Get = %v, want ErrUnavailable (the cache must not answer)", err)
		}
		rs.Restart()
		waitVerified(t, s, time.Now().UnixNano())
		if got, err := s.Get(ctx, h); !errors.Is(err, session.ErrNotFound) {
			t.Fatalf("Redis restarted empty: %+v, %v; want not found", got, err)
		}
		login() // and the cache serves again
	})

	t.Run("frozen", func(t *testing.T) {
		h := login()
		rs.Freeze()
		thawed := false
		defer func() {
			if !thawed {
				rs.Thaw()
			}
		}()
		waitUntil(t, "the silent channel dropped", func() bool { return s.e.near.verified.Load() == 0 })
		if _, err := s.Get(ctx, h); !errors.Is(err, session.ErrUnavailable) {
			t.Fatalf("Redis frozen: Get = %v, want ErrUnavailable (the cache must not answer)", err)
		}
		rs.Thaw()
		thawed = true
		waitVerified(t, s, time.Now().UnixNano())
		if _, err := s.Get(ctx, h); err != nil {
			t.Fatalf("Redis thawed: Get = %v, want the session", err)
		}
	})
}

// TestNewCacheConfig: a negative cache size or staleness is refused,
// naming the field.
func TestNewCacheConfig(t *testing.T) {
	c := goredis.NewClient(&goredis.Options{Addr: "127.0.0.1:1"})
	defer c.Close()
	for _, cc := range []CacheConfig{{Entries: -1}, {Entries: 1, MaxStaleness: -time.Second}, {Entries: 1, MaxStaleness: 10 * time.Millisecond}} {
		if _, err := New(c, Config{Cache: cc}); err == nil || !strings.Contains(err.Error(), "Config.Cache.") {
			t.Errorf("New with %+v: %v, want an error naming Config.Cache", cc, err)
		}
	}
	s, err := New(c, Config{})
	if err != nil || s.e.near != nil {
		t.Errorf("New with no cache configured: near = %v, %v; want none", s.e.near, err)
	}
	s.Run(t.Context()) // returns at once without a cache
}

// BenchmarkGetCached is BenchmarkGet with the near cache on: a read of an
// unchanged session.
func BenchmarkGetCached(b *testing.B) {
	c := redistest.Client(b)
	s := cached(b, c, redistest.Prefix(b, c, "session:"), nil, nil)
	ctx := context.Background()
	h, err := s.Create(ctx, sessiontest.Sample(time.Now(), 1))
	if err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	for b.Loop() {
		if _, err := s.Get(ctx, h); err != nil {
			b.Fatal(err)
		}
	}
}

// TestNearCacheRaces: a read that raced an invalidation or a drop does
// not remember what it read, and nothing is served while the channel is
// not verified.
func TestNearCacheRaces(t *testing.T) {
	t.Parallel()
	clock := sessiontest.NewClock(sessiontest.Start())
	c := newNearCache(CacheConfig{Entries: 8, MaxStaleness: time.Second}, clock.Now)
	sess := sessiontest.Sample(clock.Now(), 1)
	tk, rec, err := codec.SealNew(sess, clock.Now())
	if err != nil {
		t.Fatal(err)
	}
	id := tk.IDBytes()
	if got, tok := c.get(id); got != nil || tok.ok {
		t.Fatal("an unverified cache hands out a token or a record")
	}
	c.verify(clock.Now().UnixNano(), c.epoch.Load())

	_, tok := c.get(id)
	c.invalidate(id) // a write committed while the read was in flight
	c.put(id, rec, tok)
	if got, _ := c.get(id); got != nil {
		t.Error("a read that raced an invalidation was remembered")
	}

	_, tok = c.get(id)
	c.drop("lost")
	c.verify(clock.Now().UnixNano(), c.epoch.Load())
	c.put(id, rec, tok)
	if got, _ := c.get(id); got != nil {
		t.Error("a read that raced a drop was remembered")
	}

	_, tok = c.get(id)
	c.put(id, rec, tok)
	if got, _ := c.get(id); got == nil {
		t.Fatal("an undisturbed read was not remembered")
	}
	// A probe sent before a drop does not vouch for the cache after it.
	sent, epoch := clock.Now().UnixNano(), c.epoch.Load()
	c.drop("lost")
	c.verify(sent, epoch)
	if c.usable(clock.Now()) {
		t.Error("a probe sent before the drop verified the cache")
	}
	c.verify(sent, c.epoch.Load())
	clock.Advance(time.Second)
	if c.usable(clock.Now()) {
		t.Error("the cache is usable MaxStaleness after the last probe was sent")
	}
}

// TestConcurrentWritesSettle: while A rewrites a session many times and B
// reads it without pause, B may serve any of the versions; once B has
// heard past A's last write, it serves the last one.
func TestConcurrentWritesSettle(t *testing.T) {
	t.Parallel()
	ca, cb := redistest.Client(t), redistest.Client(t)
	prefix := redistest.Prefix(t, ca, "session:")
	a, b := cached(t, ca, prefix, nil, nil), cached(t, cb, prefix, nil, nil)
	ctx := t.Context()
	h, err := a.Create(ctx, sessiontest.Sample(time.Now(), 1))
	if err != nil {
		t.Fatal(err)
	}
	stop := make(chan struct{})
	var readers sync.WaitGroup
	for range 4 {
		readers.Go(func() {
			for {
				select {
				case <-stop:
					return
				default:
				}
				if _, err := b.Get(ctx, h); err != nil {
					t.Errorf("B's read during A's writes: %v", err)
					return
				}
			}
		})
	}
	const writes = 200
	for i := range writes {
		if _, err := a.Update(ctx, h, func(s *session.Session) error { s.AccessToken = "v" + strconv.Itoa(i); return nil }); err != nil {
			t.Fatal(err)
		}
	}
	done := time.Now().UnixNano()
	waitVerified(t, b, done)
	close(stop)
	readers.Wait()
	for range 3 {
		got, err := b.Get(ctx, h)
		if err != nil || got.AccessToken != "v"+strconv.Itoa(writes-1) {
			t.Fatalf("B after A's last write: %+v, %v; want access token v%d", got, err, writes-1)
		}
	}
	if value(b.e.near.hits) == 0 {
		t.Error("B never served from its cache")
	}
}

// splitClient sends its commands to one Redis and subscribes on another:
// an instance whose subscription stayed on a Sentinel's old master after a
// failover (go-redis keeps it there), which answers but hears none of the
// new master's writes until it replicates from it.
type splitClient struct {
	*goredis.Client
	sub *goredis.Client
}

func (c splitClient) Subscribe(ctx context.Context, channels ...string) *goredis.PubSub {
	return c.sub.Subscribe(ctx, channels...)
}

// probes counts the PUBLISHes of near cache probes a client sends.
type probes struct{ recordGets }

func (h *probes) ProcessHook(next goredis.ProcessHook) goredis.ProcessHook {
	return func(ctx context.Context, cmd goredis.Cmder) error {
		if args := cmd.Args(); cmd.Name() == "publish" && len(args) == 3 && strings.Contains(args[1].(string), ":probe:") {
			h.n.Add(1)
		}
		return next(ctx, cmd)
	}
}

// TestSubscriptionElsewhereNeverVerifies: a subscription on a server that
// does not hear the writes (the old master after a failover) answers
// PINGs, but never hears the probes published through the client, so the
// cache is never used: a logout through another instance is honoured.
func TestSubscriptionElsewhereNeverVerifies(t *testing.T) {
	t.Parallel()
	primary, old := redisserver.Start(t), redisserver.Start(t)
	main, stale := primary.Client(), old.Client()
	t.Cleanup(func() { main.Close(); stale.Close() })
	sent := &probes{}
	main.AddHook(sent)
	b, err := New(splitClient{Client: main, sub: stale}, Config{Cache: CacheConfig{Entries: DefaultCacheEntries}})
	if err != nil {
		t.Fatal(err)
	}
	run(t, b)
	ac := primary.Client()
	t.Cleanup(func() { ac.Close() })
	a, err := New(ac, Config{})
	if err != nil {
		t.Fatal(err)
	}
	ctx := t.Context()
	h, err := a.Create(ctx, sessiontest.Sample(time.Now(), 1))
	if err != nil {
		t.Fatal(err)
	}
	waitUntil(t, "three probes published", func() bool { return sent.n.Load() >= 3 })
	for range 2 {
		if _, err := b.Get(ctx, h); err != nil {
			t.Fatal(err)
		}
	}
	if b.e.near.verified.Load() != 0 || value(b.e.near.hits) != 0 {
		t.Fatal("a subscription that hears no writes vouched for the cache")
	}
	if err := a.Delete(ctx, h); err != nil {
		t.Fatal(err)
	}
	if got, err := b.Get(ctx, h); !errors.Is(err, session.ErrNotFound) {
		t.Fatalf("B after A's logout: %+v, %v; want not found", got, err)
	}
}
