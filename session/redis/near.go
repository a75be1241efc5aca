package redis

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"errors"
	"fmt"
	"hash/maphash"
	"log/slog"
	"net"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	goredis "github.com/redis/go-redis/v9"

	"github.com/bffgate/bffgate/session/codec"
)

// DefaultCacheEntries is the near cache's size in the gateway's default
// configuration (gateway.session.redis_cache.entries): sealed records of
// one to a few KB, so a few MB at most.
const DefaultCacheEntries = 4096

// DefaultMaxStaleness is CacheConfig.MaxStaleness when zero.
const DefaultMaxStaleness = time.Second

// MinMaxStaleness is the least CacheConfig.MaxStaleness: each instance
// publishes a probe every quarter of it.
const MinMaxStaleness = 100 * time.Millisecond

// CacheConfig configures the near cache of unchanged session records (see
// the package documentation, "Near cache").
type CacheConfig struct {
	// Entries bounds the records the cache holds; zero turns the cache
	// off (every Get is a round trip to Redis).
	Entries int `yaml:"entries"`
	// MaxStaleness bounds how long after a write committed another
	// instance may still serve the record it replaced, when the
	// invalidation channel fails silently (a partition that drops packets
	// without a reset): the cache is used only while the channel carried
	// a probe sent less than MaxStaleness ago. Default DefaultMaxStaleness,
	// at least MinMaxStaleness.
	MaxStaleness time.Duration `yaml:"max_staleness"`
}

// nearShards spreads the cache over independent locks: the hot path of
// every proxied request takes one of them.
const nearShards = 32

// nearCache remembers session records as read from Redis, so that reading
// an unchanged session costs no round trip. Every write of a record
// (Update, Delete, End) publishes the record's id on the invalidation
// channel in the same transaction (MULTI/EXEC or script) as the write, so
// that every instance that subscribes hears of every committed write.
//
// An entry is served only while the channel is verified: every
// MaxStaleness/4 the listener publishes a probe, with its send time as
// payload, through the client (to the master, where the writes and their
// invalidations go) on a probe channel of its own that its subscription
// also listens to. The probe arrives after every message the master
// published before it (one connection, or the replication stream, keeps
// their order), so its arrival proves that every write committed before
// its send time has been heard. (A PING on the subscription would not: on
// a Sentinel failover go-redis keeps the subscription on the old master,
// which answers pings but, until it replicates from the new one, hears no
// writes.) A lost, re-established or silent channel, or an emptied Redis
// (the epoch key the listener checks before each probe is gone or
// replaced), drops every entry and bypasses the cache until a new probe
// verifies it.
//
// A read that raced an invalidation must not remember what it read: get
// hands out a token (the shard's generation and the cache's epoch) taken
// before the read from Redis, and put remembers only if neither changed.
//
// The records are ciphertext under the ticket's key: the cache grants
// nothing that the ticket's holder could not read from Redis.
//
// Written by hand: no general-purpose cache does the generation check or
// the verified-channel gate.
type nearCache struct {
	max      int // per shard
	stale    time.Duration
	now      func() time.Time
	seed     maphash.Seed
	shards   [nearShards]nearShard
	epoch    atomic.Uint64
	verified atomic.Int64 // UnixNano of the send time of the last probe heard; 0: not verified

	hits, misses, bypassed, invalidations prometheus.Counter
	drops                                 *prometheus.CounterVec
}

type nearShard struct {
	mu  sync.Mutex
	gen uint64
	m   map[string]nearEntry
}

type nearEntry struct {
	rec []byte
	exp time.Time // the record's own expiry (zero: none)
}

// nearToken is what a miss hands to put: the cache state before the read.
type nearToken struct {
	ok    bool
	gen   uint64
	epoch uint64
}

func newNearCache(cfg CacheConfig, now func() time.Time) *nearCache {
	c := &nearCache{
		max:   max(1, (cfg.Entries+nearShards-1)/nearShards),
		stale: cfg.MaxStaleness,
		now:   now,
		seed:  maphash.MakeSeed(),
	}
	for i := range c.shards {
		c.shards[i].m = make(map[string]nearEntry)
	}
	counter := func(name, help string) prometheus.Counter {
		return prometheus.NewCounter(prometheus.CounterOpts{Name: "bffgate_session_redis_cache_" + name, Help: help})
	}
	c.hits = counter("hits_total", "Session reads served by the Redis store's near cache, without a round trip.")
	c.misses = counter("misses_total", "Session reads the Redis store's near cache could not serve while its invalidation channel was verified (read from Redis).")
	c.bypassed = counter("bypassed_total", "Session reads that went to Redis because the near cache's invalidation channel was not verified.")
	c.invalidations = counter("invalidations_total", "Invalidations of a session record received on the near cache's channel (a write on any instance).")
	c.drops = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "bffgate_session_redis_cache_drops_total",
		Help: "Times the near cache was emptied because its invalidation channel could not vouch for it, by reason (subscribed, lost, silent, emptied, stopped).",
	}, []string{"reason"})
	return c
}

func (c *nearCache) collectors() []prometheus.Collector {
	return []prometheus.Collector{c.hits, c.misses, c.bypassed, c.invalidations, c.drops,
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "bffgate_session_redis_cache_entries",
			Help: "Session records held by the Redis store's near cache.",
		}, func() float64 { return float64(c.len()) }),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "bffgate_session_redis_cache_verified",
			Help: "1 while the near cache's invalidation channel is verified (the cache serves), 0 while reads bypass it.",
		}, func() float64 {
			if c.usable(c.now()) {
				return 1
			}
			return 0
		}),
	}
}

func (c *nearCache) shard(id []byte) *nearShard {
	return &c.shards[maphash.Bytes(c.seed, id)%nearShards]
}

// usable reports whether the channel vouches for the cache at now.
func (c *nearCache) usable(now time.Time) bool {
	v := c.verified.Load()
	return v != 0 && now.UnixNano()-v < int64(c.stale)
}

// get returns id's remembered record, or nil and the token to pass to put
// after reading the record from Redis (a token that is not ok: do not
// remember it).
func (c *nearCache) get(id []byte) ([]byte, nearToken) {
	now := c.now()
	if !c.usable(now) {
		c.bypassed.Inc()
		return nil, nearToken{}
	}
	epoch := c.epoch.Load()
	s := c.shard(id)
	s.mu.Lock()
	e, ok := s.m[string(id)]
	if ok && !e.exp.IsZero() && !now.Before(e.exp) {
		delete(s.m, string(id))
		ok = false
	}
	gen := s.gen
	s.mu.Unlock()
	if ok {
		c.hits.Inc()
		return e.rec, nearToken{}
	}
	c.misses.Inc()
	return nil, nearToken{ok: true, gen: gen, epoch: epoch}
}

// put remembers rec (read from Redis after get returned tk) as id's
// record, unless an invalidation or a drop came in between. rec must not
// change afterwards.
func (c *nearCache) put(id, rec []byte, tk nearToken) {
	if !tk.ok {
		return
	}
	m, err := codec.ParseMeta(rec)
	if err != nil {
		return // not a record the rules can open either
	}
	s := c.shard(id)
	s.mu.Lock()
	defer s.mu.Unlock()
	// drop raises the epoch before it empties the shards, so a put that
	// sees the old epoch here is emptied after it.
	if s.gen != tk.gen || c.epoch.Load() != tk.epoch {
		return
	}
	if _, ok := s.m[string(id)]; !ok && len(s.m) >= c.max {
		for k := range s.m { // map order is random: a random eviction
			delete(s.m, k)
			break
		}
	}
	s.m[string(id)] = nearEntry{rec: rec, exp: m.ExpiresAt}
}

// invalidate forgets id's record: a write to it committed.
func (c *nearCache) invalidate(id []byte) {
	s := c.shard(id)
	s.mu.Lock()
	s.gen++
	delete(s.m, string(id))
	s.mu.Unlock()
}

// drop forgets every record and stops serving until verify is called with
// a probe sent after the drop.
func (c *nearCache) drop(reason string) {
	c.verified.Store(0)
	c.epoch.Add(1)
	for i := range c.shards {
		s := &c.shards[i]
		s.mu.Lock()
		s.gen++
		clear(s.m)
		s.mu.Unlock()
	}
	c.drops.WithLabelValues(reason).Inc()
}

// verify records that a probe sent at sent (UnixNano) was heard: every
// write committed before it has been heard.
func (c *nearCache) verify(sent int64, dropped uint64) {
	if c.epoch.Load() != dropped {
		return // a drop since the probe was sent: wait for the next one
	}
	for {
		v := c.verified.Load()
		if sent <= v || c.verified.CompareAndSwap(v, sent) {
			return
		}
	}
}

func (c *nearCache) len() int {
	n := 0
	for i := range c.shards {
		s := &c.shards[i]
		s.mu.Lock()
		n += len(s.m)
		s.mu.Unlock()
	}
	return n
}

// listener keeps the near cache's invalidation channel: it subscribes,
// probes, checks the epoch key, and applies invalidations.
type listener struct {
	rdb      goredis.UniversalClient
	channel  string
	probe    string // this listener's own probe channel
	epochKey string
	near     *nearCache
	log      *slog.Logger
	down     bool // the loss was logged; log the return once
}

// run subscribes and listens until ctx ends; the cache is dropped and
// bypassed whenever the channel cannot vouch for it, and on return.
func (l *listener) run(ctx context.Context) {
	defer l.near.drop("stopped")
	backoff := 50 * time.Millisecond
	for ctx.Err() == nil {
		err := l.session(ctx)
		if ctx.Err() != nil {
			return
		}
		if !l.down {
			l.log.Warn("session cache invalidation channel lost; reading every session from Redis until it is back", "err", err)
			l.down = true
			backoff = 50 * time.Millisecond // the first retry after a healthy spell is quick
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(backoff):
		}
		backoff = min(2*backoff, time.Second)
	}
}

// session runs one subscription until it fails. It returns the reason.
func (l *listener) session(ctx context.Context) error {
	ps := l.rdb.Subscribe(ctx) // no connection yet
	defer ps.Close()
	if err := ps.Subscribe(ctx, l.channel, l.probe); err != nil {
		l.near.drop("lost")
		return fmt.Errorf("subscribe: %w", err)
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var probeErr chan error // the prober starts once subscribed

	stale := l.near.stale
	for {
		msg, err := ps.ReceiveTimeout(ctx, stale)
		if err != nil {
			var ne net.Error
			switch {
			case ctx.Err() != nil:
				return ctx.Err()
			case errors.As(err, &ne) && ne.Timeout():
				// Not even a probe for MaxStaleness: the connection is
				// silent, perhaps dead without a reset. Start over.
				l.near.drop("silent")
			default:
				l.near.drop("lost")
			}
			return err
		}
		switch m := msg.(type) {
		case *goredis.Subscription:
			if m.Kind == "subscribe" {
				// A (re)subscription: what was published while there
				// was none is unknown.
				l.near.drop("subscribed")
				if m.Count == 2 && probeErr == nil {
					if l.down {
						l.log.Info("session cache invalidation channel back", "channel", l.channel)
						l.down = false
					}
					probeErr = make(chan error, 1)
					go func() { probeErr <- l.prober(ctx) }()
				}
			}
		case *goredis.Message:
			if m.Channel == l.probe {
				if sent, epoch, ok := parseProbe(m.Payload); ok {
					l.near.verify(sent, epoch)
				}
				break
			}
			id, err := base64.RawURLEncoding.DecodeString(m.Payload)
			if err != nil || len(id) != codec.TicketIDSize {
				l.log.Warn("session cache invalidation that names no ticket id; emptying the cache", "channel", l.channel)
				l.near.drop("lost")
				continue
			}
			l.near.invalidate(id)
			l.near.invalidations.Inc()
		}
		select {
		case err := <-probeErr:
			if err == nil { // ctx ended
				return ctx.Err()
			}
			l.near.drop("lost")
			return fmt.Errorf("probe: %w", err)
		default:
		}
	}
}

// prober publishes a probe every MaxStaleness/4, after checking that the
// epoch key still holds the value this listener knows (or setting it): a
// Redis emptied under running instances (FLUSHALL, a restart that lost
// the data) publishes nothing for the records it lost.
func (l *listener) prober(ctx context.Context) error {
	every := max(l.near.stale/4, time.Millisecond)
	t := time.NewTicker(every)
	defer t.Stop()
	var known string
	for {
		sent := l.near.now().UnixNano()
		epoch := l.near.epoch.Load()
		cur, err := l.checkEpoch(ctx)
		if err != nil {
			return err
		}
		if known != "" && cur != known {
			l.near.drop("emptied")
			l.log.Warn("session cache: Redis lost the sessions' epoch key (emptied or replaced); cache emptied", "key", l.epochKey)
			epoch = l.near.epoch.Load()
		}
		known = cur
		if err := l.rdb.Publish(ctx, l.probe, strconv.FormatInt(sent, 10)+":"+strconv.FormatUint(epoch, 10)).Err(); err != nil {
			return err
		}
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
	}
}

// checkEpoch returns the epoch key's value, setting a fresh one when it is
// missing.
func (l *listener) checkEpoch(ctx context.Context) (string, error) {
	v, err := l.rdb.Get(ctx, l.epochKey).Result()
	if err == nil {
		return v, nil
	}
	if !errors.Is(err, goredis.Nil) {
		return "", err
	}
	fresh := rand.Text()
	ok, err := l.rdb.SetNX(ctx, l.epochKey, fresh, 0).Result()
	if err != nil {
		return "", err
	}
	if ok {
		return fresh, nil
	}
	return l.rdb.Get(ctx, l.epochKey).Result() // another instance set it first
}

func parseProbe(p string) (sent int64, epoch uint64, ok bool) {
	for i := 0; i < len(p); i++ {
		if p[i] == ':' {
			s, err1 := strconv.ParseInt(p[:i], 10, 64)
			e, err2 := strconv.ParseUint(p[i+1:], 10, 64)
			return s, e, err1 == nil && err2 == nil
		}
	}
	return 0, 0, false
}
