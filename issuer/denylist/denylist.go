// Package denylist is the in-memory side of the issuer's denylist of
// revoked access tokens (by jti) and grants (by grant id).
//
// Access tokens are self-contained JWTs (ForgeRock AM's client-side
// tokens): the only way to revoke one before it expires is to list it
// (RFC 7009 §2.2: after revocation the token must not be accepted by the
// authorization server's introspection, RFC 7662 §2.2 "active": false). The
// list of record is the issuer's store; a List keeps a bounded cache of
// denied ids in front of it, so a token that was revoked is refused
// without a store read, and learns of revocations made by another issuer
// instance sharing the store by polling the store's change log.
//
// # Correctness of a miss
//
// The cache is bounded and holds only positive answers, so a miss proves
// nothing: Denied then asks the store. The cache saves the store read for
// revoked tokens that are presented again (the common case after a
// revocation: a client retrying), while a live token costs one store read
// per id checked (about a microsecond on bbolt). A store error is returned,
// never taken as "not denied": callers fail closed.
//
// # Expiry
//
// Entries live until their Until (the token's expiry plus the purge delay,
// set by the caller). Removing them from the store is the issuer's purge
// job (issuer.Server.Run), not the cache's; Run drops the expired entries
// from the cache at every poll.
package denylist

import (
	"container/list"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/bffgate/bffgate/issuer/storage"
)

// Store is what a List reads of the issuer's store (storage.Store
// satisfies it): one id's entry, and the change log.
type Store interface {
	Denied(ctx context.Context, kind storage.DenyKind, id string) (bool, error)
	DenylistChanges(ctx context.Context, after storage.Cursor, limit int) ([]storage.DenyEntry, storage.Cursor, error)
}

// Subscriber pushes denylist additions as they happen (the Redis store's
// pub/sub channel). Subscribe returns once subscribed and calls fn for each
// addition until ctx is done.
type Subscriber interface {
	Subscribe(ctx context.Context, fn func(storage.DenyEntry)) error
}

// Config configures a List.
type Config struct {
	// Store is the persistent denylist. Required.
	Store Store
	// CacheSize bounds the cache of denied ids. Default 10000.
	CacheSize int
	// PollInterval is how often Run reads the store's change log into the
	// cache. Default 60s. Correctness does not wait for it (a cache miss
	// reads the store); polling makes revocations made by other instances
	// cache hits here, and keeps working when the store is briefly down.
	// Each poll also drops expired entries from the cache.
	PollInterval time.Duration
	// Subscriber, when set, makes Run add pushed entries to the cache as
	// they arrive, in addition to polling.
	Subscriber Subscriber
	// OnClient, when set, receives the change-log entries of kind
	// storage.DenyClient (a client disabled or enabled), pushed or
	// polled, instead of the cache: they deny no token by themselves.
	OnClient func(storage.DenyEntry)
	// Now is the clock; nil means time.Now.
	Now func() time.Time
	// Logger receives poll failures; nil means slog.Default().
	Logger *slog.Logger
	// Registerer receives the metrics; nil means none are registered.
	Registerer prometheus.Registerer
}

// DefaultConfig returns the defaults New fills in (Store left nil).
func DefaultConfig() Config {
	return Config{CacheSize: 10000, PollInterval: 60 * time.Second}
}

// pollPage is how many change-log entries one store call returns.
const pollPage = 1000

// List is a denylist cache in front of the issuer's store. It is safe for
// concurrent use.
type List struct {
	cfg Config
	log *slog.Logger

	mu     sync.Mutex
	cache  *lru
	cursor storage.Cursor
	pollMu sync.Mutex // one Poll at a time, so the cursor only moves forward

	entries    prometheus.Gauge
	hits       prometheus.Counter
	misses     prometheus.Counter
	pollErrors prometheus.Counter
}

// New returns a List for cfg.
func New(cfg Config) (*List, error) {
	def := DefaultConfig()
	if cfg.Store == nil {
		return nil, errors.New("denylist: Config.Store is nil")
	}
	switch {
	case cfg.CacheSize < 0:
		return nil, fmt.Errorf("denylist: Config.CacheSize is %d; it must be positive (0 means %d)", cfg.CacheSize, def.CacheSize)
	case cfg.PollInterval < 0:
		return nil, fmt.Errorf("denylist: Config.PollInterval is %v; it must be positive (0 means %v)", cfg.PollInterval, def.PollInterval)
	}
	if cfg.CacheSize == 0 {
		cfg.CacheSize = def.CacheSize
	}
	if cfg.PollInterval == 0 {
		cfg.PollInterval = def.PollInterval
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	l := &List{
		cfg:   cfg,
		log:   cfg.Logger.With("subsystem", "denylist"),
		cache: newLRU(cfg.CacheSize),
		entries: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "bffgate_issuer_denylist_cache_entries",
			Help: "Denied ids held in the issuer's in-memory denylist cache.",
		}),
		hits: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "bffgate_issuer_denylist_cache_hits_total",
			Help: "Denylist checks answered from the cache (a revoked token or grant).",
		}),
		misses: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "bffgate_issuer_denylist_cache_misses_total",
			Help: "Denylist checks that read the store (live tokens, or denied ids evicted from the cache).",
		}),
		pollErrors: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "bffgate_issuer_denylist_poll_errors_total",
			Help: "Failed reads of the store's denylist change log.",
		}),
	}
	if cfg.Registerer != nil {
		for _, c := range []prometheus.Collector{l.entries, l.hits, l.misses, l.pollErrors} {
			if err := cfg.Registerer.Register(c); err != nil {
				return nil, fmt.Errorf("denylist: register metrics: %w", err)
			}
		}
	}
	return l, nil
}

// Denied reports whether the access token jti, or its grant grantID (may
// be empty), is denylisted. The cache answers for ids it holds; otherwise
// the store is read and a denied id is cached. A store error is returned:
// the caller treats the token as inactive (fail closed).
func (l *List) Denied(ctx context.Context, jti, grantID string) (bool, error) {
	l.mu.Lock()
	hit := (jti != "" && l.cache.get(cacheKey(storage.DenyJTI, jti))) ||
		(grantID != "" && l.cache.get(cacheKey(storage.DenyGrant, grantID)))
	l.mu.Unlock()
	if hit {
		l.hits.Inc()
		return true, nil
	}
	l.misses.Inc()
	for _, q := range [...]struct {
		kind storage.DenyKind
		id   string
	}{{storage.DenyJTI, jti}, {storage.DenyGrant, grantID}} {
		if q.id == "" {
			continue
		}
		denied, err := l.cfg.Store.Denied(ctx, q.kind, q.id)
		if err != nil {
			return false, fmt.Errorf("denylist: check %s: %w", q.kind, err)
		}
		if denied {
			// The store's Denied does not say until when; the entry
			// stays until evicted or replaced by a polled one.
			l.add(storage.DenyEntry{Kind: q.kind, ID: q.id})
			return true, nil
		}
	}
	return false, nil
}

// Add caches e. The instance that revoked calls it right after the store
// write, so its own next check is a cache hit without waiting for a poll.
func (l *List) Add(e storage.DenyEntry) { l.add(e) }

func (l *List) add(e storage.DenyEntry) {
	if e.ID == "" {
		return
	}
	if e.Kind == storage.DenyClient {
		if l.cfg.OnClient != nil {
			l.cfg.OnClient(e)
		}
		return
	}
	l.mu.Lock()
	l.cache.put(cacheKey(e.Kind, e.ID), e.Until)
	n := l.cache.len()
	l.mu.Unlock()
	l.entries.Set(float64(n))
}

// Poll drops the entries expired at Now from the cache and reads the
// store's change log after the last cursor into it. The first Poll reads
// every live entry (the newest CacheSize of them stay cached).
func (l *List) Poll(ctx context.Context) error {
	l.pollMu.Lock()
	defer l.pollMu.Unlock()
	l.mu.Lock()
	l.cache.dropExpired(l.cfg.Now())
	l.mu.Unlock()
	for {
		l.mu.Lock()
		cur := l.cursor
		l.mu.Unlock()
		page, next, err := l.cfg.Store.DenylistChanges(ctx, cur, pollPage)
		if err != nil {
			l.pollErrors.Inc()
			return fmt.Errorf("denylist: poll changes after %d: %w", cur, err)
		}
		l.mu.Lock()
		var clients []storage.DenyEntry
		for _, e := range page {
			if e.Kind == storage.DenyClient {
				clients = append(clients, e)
				continue
			}
			l.cache.put(cacheKey(e.Kind, e.ID), e.Until)
		}
		l.cursor = next
		n := l.cache.len()
		l.mu.Unlock()
		l.entries.Set(float64(n))
		if l.cfg.OnClient != nil && cur != 0 { // the first poll's states are read at start
			for _, e := range clients {
				l.cfg.OnClient(e)
			}
		}
		if len(page) < pollPage {
			return nil
		}
	}
}

// Run polls every PollInterval until ctx is done, starting at once.
// Failures are logged and counted, and retried at the next tick. With a
// Subscriber, pushed entries are cached as they arrive.
func (l *List) Run(ctx context.Context) {
	if l.cfg.Subscriber != nil {
		if err := l.cfg.Subscriber.Subscribe(ctx, l.add); err != nil && ctx.Err() == nil {
			l.log.Error("denylist subscription failed; relying on polling", "err", err)
		}
	}
	l.pollLogged(ctx)
	poll := time.NewTicker(l.cfg.PollInterval)
	defer poll.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-poll.C:
			l.pollLogged(ctx)
		}
	}
}

func (l *List) pollLogged(ctx context.Context) {
	if err := l.Poll(ctx); err != nil && ctx.Err() == nil {
		l.log.Warn("denylist poll failed; revocations made by other instances are learnt at the next poll", "err", err)
	}
}

func cacheKey(kind storage.DenyKind, id string) string {
	return string(kind) + "\x00" + id
}

// lru is a bounded least-recently-used set of denied ids with their Until.
// It is written here (container/list plus a map) because our dependency
// set holds no well-kept generic LRU; the List's mutex guards it.
type lru struct {
	max   int
	order *list.List // front: most recently used; values are *lruEntry
	items map[string]*list.Element
}

type lruEntry struct {
	key   string
	until time.Time // zero: unknown (found by a store read)
}

func newLRU(max int) *lru {
	return &lru{max: max, order: list.New(), items: make(map[string]*list.Element)}
}

func (c *lru) len() int { return len(c.items) }

// get reports whether key is cached, marking it recently used.
func (c *lru) get(key string) bool {
	el, ok := c.items[key]
	if ok {
		c.order.MoveToFront(el)
	}
	return ok
}

// put caches key, keeping the later of two known Untils, and evicts the
// least recently used entry when full.
func (c *lru) put(key string, until time.Time) {
	if el, ok := c.items[key]; ok {
		e := el.Value.(*lruEntry)
		if until.After(e.until) {
			e.until = until
		}
		c.order.MoveToFront(el)
		return
	}
	c.items[key] = c.order.PushFront(&lruEntry{key: key, until: until})
	for len(c.items) > c.max {
		old := c.order.Back()
		c.order.Remove(old)
		delete(c.items, old.Value.(*lruEntry).key)
	}
}

// dropExpired removes entries whose known Until is at or before now.
func (c *lru) dropExpired(now time.Time) {
	for el := c.order.Front(); el != nil; {
		next := el.Next()
		e := el.Value.(*lruEntry)
		if !e.until.IsZero() && !now.Before(e.until) {
			c.order.Remove(el)
			delete(c.items, e.key)
		}
		el = next
	}
}
