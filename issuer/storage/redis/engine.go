package redis

import (
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	goredis "github.com/redis/go-redis/v9"

	"github.com/bffgate/bffgate/issuer/storage"
)

// Engine is storage.Engine on Redis: the primitives of the issuer's rules
// as optimistic transactions. An Update reads with WATCH (every key it
// reads is watched before it is read), buffers its writes, and sends them
// in one MULTI/EXEC; when another client changed a watched key in
// between, EXEC applies nothing and Update runs fn again from the start,
// up to Config.MaxRetries times, then fails with ErrConflict (which
// matches storage.ErrUnavailable): never half a rule.
//
// The key names and value encodings are those of the store before the
// engines (see the package documentation and testdata/release1.json): a
// bucket maps onto a key infix, the denylist's 8-byte Until onto the
// decimal nanoseconds the store wrote, the throttle's record onto its hash.
type Engine struct {
	rdb goredis.UniversalClient
	cfg Config
	k   keys
	// route is what Update passes to the client's Watch: a Cluster client
	// needs a key to pick the node (the key list, in the {issuer} slot,
	// rarely written); other clients need none, which saves the round
	// trip of watching it.
	route []string

	retries   prometheus.Counter
	conflicts prometheus.Counter
}

var (
	_ storage.Engine     = (*Engine)(nil)
	_ storage.Prefetcher = (*tx)(nil)
)

// ErrConflict means an Update lost its optimistic race Config.MaxRetries
// times in a row (other writers kept changing what it read). Nothing of it
// was applied; the request may be retried. It is returned wrapped
// together with storage.ErrUnavailable.
var ErrConflict = errors.New("redis: transaction kept conflicting with concurrent writers")

// NewEngine returns the Engine on client (see Config for the defaults).
func NewEngine(client goredis.UniversalClient, cfg Config) (*Engine, error) {
	cfg, err := cfg.withDefaults(client)
	if err != nil {
		return nil, err
	}
	e := &Engine{
		rdb: client, cfg: cfg, k: keys{base: cfg.Prefix + "{issuer}:"},
		retries: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "bffgate_issuer_store_redis_tx_retries_total",
			Help: "Transactions of the issuer's Redis store run again because another client changed a key they had read (WATCH).",
		}),
		conflicts: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "bffgate_issuer_store_redis_tx_conflicts_total",
			Help: "Transactions of the issuer's Redis store that lost every one of their tries to concurrent writers and failed (answered 503, nothing applied).",
		}),
	}
	if _, ok := client.(*goredis.ClusterClient); ok {
		e.route = []string{e.k.keyList()}
	}
	if cfg.Registerer != nil {
		for _, c := range []prometheus.Collector{e.retries, e.conflicts} {
			if err := cfg.Registerer.Register(c); err != nil {
				return nil, fmt.Errorf("redis: register metrics: %w", err)
			}
		}
	}
	return e, nil
}

// View runs fn with plain reads (no snapshot across keys: each read sees
// the latest committed value).
func (e *Engine) View(ctx context.Context, fn func(storage.Tx) error) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	return fn(e.newTx(ctx, nil))
}

// Update runs fn as one optimistic transaction; see Engine.
func (e *Engine) Update(ctx context.Context, fn func(storage.Tx) error) error {
	for attempt := range e.cfg.MaxRetries {
		if err := ctx.Err(); err != nil {
			return err
		}
		if attempt > 0 {
			// A little jitter so that writers that keep meeting each
			// other on one key spread out instead of colliding again.
			time.Sleep(rand.N(time.Duration(min(attempt, 10)) * 100 * time.Microsecond))
		}
		var fnErr error
		err := e.rdb.Watch(ctx, func(rtx *goredis.Tx) error {
			t := e.newTx(ctx, rtx)
			if fnErr = fn(t); fnErr != nil {
				return fnErr
			}
			return t.commit()
		}, e.route...)
		switch {
		case fnErr != nil:
			return fnErr
		case errors.Is(err, goredis.TxFailedErr):
			if attempt+1 < e.cfg.MaxRetries {
				e.retries.Inc()
			}
			continue
		case err != nil:
			return fault("commit", err)
		}
		return nil
	}
	e.conflicts.Inc()
	e.cfg.Logger.Warn("issuer store transaction gave up: other writers kept changing what it read (answered 503, nothing applied)",
		"subsystem", "storage.redis", "tries", e.cfg.MaxRetries)
	return fmt.Errorf("%w: %w (%d tries)", storage.ErrUnavailable, ErrConflict, e.cfg.MaxRetries)
}

// Ping reports whether Redis answers.
func (e *Engine) Ping(ctx context.Context) error {
	return fault("ping", e.rdb.Ping(ctx).Err())
}

// fault wraps an error of Redis with what was being done; one that means
// Redis could not be reached or could not serve also matches
// storage.ErrUnavailable.
func fault(op string, err error) error {
	if err == nil {
		return nil
	}
	if unavailable(err) {
		return fmt.Errorf("redis: %s: %w: %w", op, storage.ErrUnavailable, err)
	}
	return fmt.Errorf("redis: %s: %w", op, err)
}

// keys names the Engine's keys; see the package documentation.
type keys struct{ base string }

func (k keys) keyList() string               { return k.base + "keys" }
func (k keys) secret(name string) string     { return k.base + "secret:" + name }
func (k keys) code(hash string) string       { return k.base + "code:" + hash }
func (k keys) grant(id string) string        { return k.base + "grant:" + id }
func (k keys) refresh(jti string) string     { return k.base + "refresh:" + jti }
func (k keys) grantRefresh(id string) string { return k.base + "grant-refresh:" + id }
func (k keys) sidGrants(sid string) string   { return k.base + "sid-grants:" + sid }
func (k keys) deny(kind storage.DenyKind, id string) string {
	return k.base + "deny:" + string(kind) + ":" + id
}
func (k keys) denylog() string        { return k.base + "denylog" }
func (k keys) denyseq() string        { return k.base + "denyseq" }
func (k keys) expiry() string         { return k.base + "expiry" }
func (k keys) login(id string) string { return k.base + "login:" + id }
func (k keys) channel() string        { return k.base + "denylist" }
func (k keys) loginFailures(key string) string {
	return k.base + "login-failures:" + key
}
func (k keys) assertion(key string) string   { return k.base + "assertion:" + key }
func (k keys) clients(key string) string     { return k.base + "clients:" + key }
func (k keys) registration(id string) string { return k.base + "registration:" + id }
func (k keys) consent(key string) string     { return k.base + "consent:" + key }

// splitDenyKey splits a storage.DenyKey.
func splitDenyKey(key string) (storage.DenyKind, string, error) {
	kind, id, ok := strings.Cut(key, "\x00")
	if !ok || kind == "" || strings.ContainsAny(kind, ": ") {
		return "", "", fmt.Errorf("redis: denylist key %q is not kind NUL id", key)
	}
	return storage.DenyKind(kind), id, nil
}

// record returns the Redis key of key in bucket b.
func (k keys) record(b storage.Bucket, key string) (string, error) {
	switch b {
	case storage.BucketKeys:
		if key != "keys" {
			return "", fmt.Errorf("redis: bucket of keys holds only the key list, not %q", key)
		}
		return k.keyList(), nil
	case storage.BucketSecrets:
		return k.secret(key), nil
	case storage.BucketCodes:
		return k.code(key), nil
	case storage.BucketGrants:
		return k.grant(key), nil
	case storage.BucketRefresh:
		return k.refresh(key), nil
	case storage.BucketDeny:
		kind, id, err := splitDenyKey(key)
		if err != nil {
			return "", err
		}
		return k.deny(kind, id), nil
	case storage.BucketLogin:
		return k.login(key), nil
	case storage.BucketLoginFailures:
		return k.loginFailures(key), nil
	case storage.BucketAssertions:
		return k.assertion(key), nil
	case storage.BucketClients:
		return k.clients(key), nil
	case storage.BucketRegistrations:
		return k.registration(key), nil
	case storage.BucketConsents:
		return k.consent(key), nil
	}
	return "", fmt.Errorf("redis: unknown bucket %d", b)
}

// set returns the Redis key of owner's set in ix, and the expiry kind of
// its members' records (the set lives as long as its latest member).
func (k keys) set(ix storage.Index, owner string) (string, storage.ExpiryKind, storage.Bucket, error) {
	switch ix {
	case storage.IndexGrantRefresh:
		return k.grantRefresh(owner), storage.ExpireRefresh, storage.BucketRefresh, nil
	case storage.IndexSIDGrants:
		return k.sidGrants(owner), storage.ExpireGrant, storage.BucketGrants, nil
	}
	return "", 0, 0, fmt.Errorf("redis: unknown index %d", ix)
}

// expiryBuckets are the expiry kinds whose id is a record's key in one
// bucket: one table for expiring (writing the index) and parseExpiry
// (reading it back), so that a new kind cannot be added to one alone.
var expiryBuckets = map[storage.ExpiryKind]storage.Bucket{
	storage.ExpireCode:         storage.BucketCodes,
	storage.ExpireRefresh:      storage.BucketRefresh,
	storage.ExpireGrant:        storage.BucketGrants,
	storage.ExpireLogin:        storage.BucketLogin,
	storage.ExpireAssertion:    storage.BucketAssertions,
	storage.ExpireRegistration: storage.BucketRegistrations,
	storage.ExpireConsent:      storage.BucketConsents,
}

// expiring returns the record key and the expiry-index member of an
// expiry entry. The member is the kind's byte and the record's id, with
// a denylist entry's id as "kind:id"; a throttle record has none (it is
// not indexed: its TTL alone removes it, as before the engines).
func (k keys) expiring(kind storage.ExpiryKind, id string) (record, member string, err error) {
	b, plain := expiryBuckets[kind]
	switch {
	case plain:
	case kind == storage.ExpireDeny:
		dk, did, err := splitDenyKey(id)
		if err != nil {
			return "", "", err
		}
		return k.deny(dk, did), string(kind) + string(dk) + ":" + did, nil
	case kind == storage.ExpireLoginFailures:
		return k.loginFailures(id), "", nil
	default:
		return "", "", fmt.Errorf("redis: expiry entries of kind %q are not set this way", byte(kind))
	}
	rk, err := k.record(b, id)
	return rk, string(kind) + id, err
}

// tx is one transaction. In an Update (rtx set) every read first WATCHes
// its keys; writes are queued and sent in MULTI/EXEC by commit. vals
// caches what was read and overlays what was written (nil: absent), so
// that later reads see the transaction's own writes.
type tx struct {
	e   *Engine
	ctx context.Context
	rtx *goredis.Tx

	vals map[string][]byte
	sets map[string]*setState
	ops  []func(goredis.Pipeliner)
	// ttl is the PEXPIREAT (ms) set on a record key in this transaction,
	// which a later Put keeps.
	ttl map[string]int64
	// expires is the expiry set for kind+id in this transaction, and
	// setTTL the sets that gained members: at commit a set's TTL is
	// raised to its new member's (PEXPIREAT NX, then GT).
	expires map[string]time.Time
	setTTL  []setMember
	// logMembers maps an ExpireLog id that Due returned to its stored
	// expiry-index member, which Unexpire removes.
	logMembers map[string]string
}

type setState struct {
	loaded  bool
	members map[string]bool
}

type setMember struct {
	key, expiry string // the set; kind+id of the member's record
}

// newTx returns a transaction; a View's (rtx nil) reads Redis directly
// and keeps nothing.
func (e *Engine) newTx(ctx context.Context, rtx *goredis.Tx) *tx {
	if rtx == nil {
		return &tx{e: e, ctx: ctx}
	}
	return &tx{
		e: e, ctx: ctx, rtx: rtx,
		vals: map[string][]byte{}, sets: map[string]*setState{}, ttl: map[string]int64{},
		expires: map[string]time.Time{}, logMembers: map[string]string{},
	}
}

var errReadOnly = errors.New("redis: write in a read-only transaction")

func (t *tx) writable() error {
	if t.rtx == nil {
		return errReadOnly
	}
	return nil
}

// pipe runs reads in one round trip, after WATCHing watch in an Update.
func (t *tx) pipe(watch []string, fn func(goredis.Pipeliner)) error {
	var p goredis.Pipeliner
	if t.rtx != nil {
		p = t.rtx.Pipeline()
		if len(watch) > 0 {
			p.Do(t.ctx, append([]any{"watch"}, anys(watch)...)...)
		}
	} else {
		p = t.e.rdb.Pipeline()
	}
	fn(p)
	_, err := p.Exec(t.ctx)
	if errors.Is(err, goredis.Nil) {
		return nil
	}
	return err
}

func anys(s []string) []any {
	out := make([]any, len(s))
	for i, v := range s {
		out[i] = v
	}
	return out
}

// recordRef is one record to read: its bucket (for its encoding) and key.
type recordRef struct {
	b   storage.Bucket
	key string
}

// read1 reads one record outside a transaction.
func (t *tx) read1(r recordRef) ([]byte, error) {
	var c goredis.Cmder
	if r.b == storage.BucketLoginFailures {
		c = t.e.rdb.HMGet(t.ctx, r.key, throttleFields...)
	} else {
		c = t.e.rdb.Get(t.ctx, r.key)
	}
	if err := c.Err(); err != nil && !errors.Is(err, goredis.Nil) {
		return nil, fault("read", err)
	}
	v, err := decodeValue(r.b, c)
	if err != nil {
		return nil, fmt.Errorf("redis: read %s: %w", r.key, err)
	}
	return v, nil
}

// fetch reads the records not yet in vals, watching them, in one round
// trip (an Update's reads; a View reads with read1).
func (t *tx) fetch(refs ...recordRef) error {
	if t.rtx == nil {
		return nil
	}
	var need []recordRef
	var watch []string
	for _, r := range refs {
		if _, ok := t.vals[r.key]; !ok && !slices.Contains(watch, r.key) {
			need = append(need, r)
			watch = append(watch, r.key)
		}
	}
	if len(need) == 0 {
		return nil
	}
	cmds := make([]goredis.Cmder, len(need))
	err := t.pipe(watch, func(p goredis.Pipeliner) {
		for i, r := range need {
			if r.b == storage.BucketLoginFailures {
				cmds[i] = p.HMGet(t.ctx, r.key, throttleFields...)
			} else {
				cmds[i] = p.Get(t.ctx, r.key)
			}
		}
	})
	if err != nil {
		return fault("read", err)
	}
	for i, r := range need {
		v, err := decodeValue(r.b, cmds[i])
		if err != nil {
			return fmt.Errorf("redis: read %s: %w", r.key, err)
		}
		t.vals[r.key] = v
	}
	return nil
}

// Prefetch reads (and, in an Update, watches) every record of refs in one
// round trip.
func (t *tx) Prefetch(refs ...storage.Ref) error {
	rr := make([]recordRef, 0, len(refs))
	for _, r := range refs {
		rk, err := t.e.k.record(r.Bucket, r.Key)
		if err != nil {
			return err
		}
		rr = append(rr, recordRef{r.Bucket, rk})
	}
	return t.fetch(rr...)
}

func (t *tx) Get(b storage.Bucket, key string) ([]byte, error) {
	rk, err := t.e.k.record(b, key)
	if err != nil {
		return nil, err
	}
	if t.rtx == nil {
		return t.read1(recordRef{b, rk})
	}
	if err := t.fetch(recordRef{b, rk}); err != nil {
		return nil, err
	}
	return slices.Clone(t.vals[rk]), nil
}

func (t *tx) Put(b storage.Bucket, key string, value []byte) error {
	if err := t.writable(); err != nil {
		return err
	}
	if len(value) == 0 {
		return fmt.Errorf("redis: put %q: empty value", key)
	}
	rk, err := t.e.k.record(b, key)
	if err != nil {
		return err
	}
	switch b {
	case storage.BucketDeny:
		if len(value) != 8 {
			return fmt.Errorf("redis: denylist entry %q: value of %d bytes, want 8", key, len(value))
		}
		s := strconv.FormatUint(binary.BigEndian.Uint64(value), 10)
		t.set(rk, s)
	case storage.BucketLoginFailures:
		fields, err := encodeThrottle(value)
		if err != nil {
			return fmt.Errorf("redis: put throttle state %q: %w", key, err)
		}
		t.ops = append(t.ops, func(p goredis.Pipeliner) {
			p.Del(t.ctx, rk)
			p.HSet(t.ctx, rk, fields...)
		})
		delete(t.ttl, rk)
	default:
		t.set(rk, string(value))
	}
	t.vals[rk] = slices.Clone(value)
	return nil
}

// set queues SET, keeping an expiry set on the key earlier in the
// transaction (SET alone would clear it).
func (t *tx) set(key, val string) {
	if ms, ok := t.ttl[key]; ok {
		t.ops = append(t.ops, func(p goredis.Pipeliner) { p.Do(t.ctx, "set", key, val, "pxat", ms) })
		return
	}
	t.ops = append(t.ops, func(p goredis.Pipeliner) { p.Set(t.ctx, key, val, 0) })
}

func (t *tx) Delete(b storage.Bucket, key string) error {
	if err := t.writable(); err != nil {
		return err
	}
	rk, err := t.e.k.record(b, key)
	if err != nil {
		return err
	}
	t.ops = append(t.ops, func(p goredis.Pipeliner) { p.Del(t.ctx, rk) })
	t.vals[rk] = nil
	delete(t.ttl, rk)
	return nil
}

// loadSet reads a set once per transaction (watching it) and, in an
// Update, the records its members name, so that the rules' reads of them
// that follow cost no round trip.
func (t *tx) loadSet(ix storage.Index, owner string) (*setState, error) {
	key, _, b, err := t.e.k.set(ix, owner)
	if err != nil {
		return nil, err
	}
	if t.rtx == nil {
		ms, err := t.e.rdb.SMembers(t.ctx, key).Result()
		if err != nil {
			return nil, fault("read set", err)
		}
		st := &setState{loaded: true, members: make(map[string]bool, len(ms))}
		for _, m := range ms {
			st.members[m] = true
		}
		return st, nil
	}
	st := t.sets[key]
	if st == nil {
		st = &setState{members: map[string]bool{}}
		t.sets[key] = st
	}
	if st.loaded {
		return st, nil
	}
	var cmd *goredis.StringSliceCmd
	if err := t.pipe([]string{key}, func(p goredis.Pipeliner) { cmd = p.SMembers(t.ctx, key) }); err != nil {
		return nil, fault("read set", err)
	}
	for _, m := range cmd.Val() {
		if _, changed := st.members[m]; !changed {
			st.members[m] = true
		}
	}
	st.loaded = true
	{
		refs := make([]recordRef, 0, len(st.members))
		for m := range st.members {
			rk, err := t.e.k.record(b, m)
			if err != nil {
				return nil, err
			}
			refs = append(refs, recordRef{b, rk})
		}
		if err := t.fetch(refs...); err != nil {
			return nil, err
		}
	}
	return st, nil
}

func (t *tx) changeSet(ix storage.Index, owner, member string, add bool) error {
	if err := t.writable(); err != nil {
		return err
	}
	key, kind, _, err := t.e.k.set(ix, owner)
	if err != nil {
		return err
	}
	st := t.sets[key]
	if st == nil {
		st = &setState{members: map[string]bool{}}
		t.sets[key] = st
	}
	st.members[member] = add
	if add {
		t.ops = append(t.ops, func(p goredis.Pipeliner) { p.SAdd(t.ctx, key, member) })
		t.setTTL = append(t.setTTL, setMember{key, string(kind) + member})
	} else {
		t.ops = append(t.ops, func(p goredis.Pipeliner) { p.SRem(t.ctx, key, member) })
	}
	return nil
}

func (t *tx) AddMember(ix storage.Index, owner, member string) error {
	return t.changeSet(ix, owner, member, true)
}

func (t *tx) RemoveMember(ix storage.Index, owner, member string) error {
	return t.changeSet(ix, owner, member, false)
}

func (t *tx) Members(ix storage.Index, owner string) ([]string, error) {
	st, err := t.loadSet(ix, owner)
	if err != nil {
		return nil, err
	}
	var out []string
	for m, in := range st.members {
		if in {
			out = append(out, m)
		}
	}
	slices.Sort(out)
	return out, nil
}

// Expire enters the record in the expiry index (a sorted set scored by
// the expiry in milliseconds) and sets its Redis TTL to the expiry plus
// Config.TTLGrace, the backstop when no instance purges.
func (t *tx) Expire(kind storage.ExpiryKind, id string, at time.Time) error {
	if err := t.writable(); err != nil {
		return err
	}
	rk, member, err := t.e.k.expiring(kind, id)
	if err != nil {
		return err
	}
	ms := at.Add(t.e.cfg.TTLGrace).UnixMilli()
	score := float64(at.UnixMilli())
	t.ops = append(t.ops, func(p goredis.Pipeliner) {
		if member != "" {
			p.ZAdd(t.ctx, t.e.k.expiry(), goredis.Z{Score: score, Member: member})
		}
		p.PExpireAt(t.ctx, rk, time.UnixMilli(ms))
	})
	t.ttl[rk] = ms
	t.expires[string(kind)+id] = at
	return nil
}

func (t *tx) Unexpire(kind storage.ExpiryKind, id string, at time.Time) error {
	if err := t.writable(); err != nil {
		return err
	}
	var member string
	if kind == storage.ExpireLog {
		m, ok := t.logMembers[id]
		if !ok {
			return fmt.Errorf("redis: unexpire of a change-log entry that Due did not list in this transaction")
		}
		member = m
	} else {
		var err error
		if _, member, err = t.e.k.expiring(kind, id); err != nil {
			return err
		}
	}
	if member != "" {
		t.ops = append(t.ops, func(p goredis.Pipeliner) { p.ZRem(t.ctx, t.e.k.expiry(), member) })
	}
	if old, ok := t.expires[string(kind)+id]; ok && old.Equal(at) {
		delete(t.expires, string(kind)+id)
	}
	return nil
}

// Due lists expiry-index entries. Scores are whole milliseconds (the
// floor of the expiry, as the store before the engines wrote them), so
// an entry is due only once its whole millisecond has passed: never
// early, at most a millisecond late.
//
// In an Update, the entries read are checked again after their records
// are watched: a record moved or removed by another writer between the
// index read and the watch is no longer listed, and one changed after
// the watch fails the transaction (which then starts again). The index
// itself is not watched, so that a purge does not conflict with every
// grant that adds to it.
func (t *tx) Due(now time.Time, limit int) ([]storage.Due, error) {
	max := int64(storage.Nanos(now)/uint64(time.Millisecond)) - 1
	by := &goredis.ZRangeBy{Min: "-inf", Max: strconv.FormatInt(max, 10)}
	if limit > 0 {
		by.Count = int64(limit)
	}
	zs, err := t.e.rdb.ZRangeByScoreWithScores(t.ctx, t.e.k.expiry(), by).Result()
	if err != nil {
		return nil, fault("read expiry index", err)
	}
	type cand struct {
		due    storage.Due
		member string
		ref    recordRef
	}
	var cands []cand
	var strays []string
	for _, z := range zs {
		m, _ := z.Member.(string)
		d, ref, ok := t.parseExpiry(m)
		if !ok {
			strays = append(strays, m)
			continue
		}
		d.At = time.UnixMilli(int64(z.Score)).UTC()
		cands = append(cands, cand{d, m, ref})
	}
	if t.rtx != nil && len(strays) > 0 {
		// Members no release wrote, or of a kind this one does not
		// know: not ours to interpret, dropped as the store always did.
		t.ops = append(t.ops, func(p goredis.Pipeliner) { p.ZRem(t.ctx, t.e.k.expiry(), anys(strays)...) })
	}
	if t.rtx != nil && len(cands) > 0 {
		var refs []recordRef
		var watch []string
		members := make([]string, len(cands))
		for i, c := range cands {
			members[i] = c.member
			if c.ref.key != "" {
				refs = append(refs, c.ref)
				watch = append(watch, c.ref.key)
			}
		}
		var scores *goredis.FloatSliceCmd
		if err := t.pipe(watch, func(p goredis.Pipeliner) { scores = p.ZMScore(t.ctx, t.e.k.expiry(), members...) }); err != nil {
			return nil, fault("read expiry index", err)
		}
		if err := t.fetch(refs...); err != nil {
			return nil, err
		}
		kept := cands[:0]
		for i, c := range cands {
			// ZMSCORE gives 0 for a member that is gone.
			if s := scores.Val()[i]; s != 0 && s <= float64(max) {
				c.due.At = time.UnixMilli(int64(s)).UTC()
				kept = append(kept, c)
			}
		}
		cands = kept
	}
	out := make([]storage.Due, len(cands))
	for i, c := range cands {
		out[i] = c.due
		if c.due.Kind == storage.ExpireLog && t.rtx != nil {
			t.logMembers[c.due.ID] = c.member
		}
	}
	return out, nil
}

// parseExpiry reads an expiry-index member: its entry and the record it
// names (none for a change-log entry).
func (t *tx) parseExpiry(m string) (storage.Due, recordRef, bool) {
	if m == "" {
		return storage.Due{}, recordRef{}, false
	}
	kind, id := storage.ExpiryKind(m[0]), m[1:]
	b, plain := expiryBuckets[kind]
	switch {
	case plain:
	case kind == storage.ExpireDeny:
		dk, did, ok := strings.Cut(id, ":")
		if !ok || dk == "" {
			return storage.Due{}, recordRef{}, false
		}
		b, id = storage.BucketDeny, storage.DenyKey(storage.DenyKind(dk), did)
	case kind == storage.ExpireLog:
		seq, _, err := decodeLogMember(id)
		if err != nil {
			return storage.Due{}, recordRef{}, false
		}
		return storage.Due{Kind: kind, ID: storage.LogExpiryID(storage.Cursor(seq))}, recordRef{}, true
	default:
		return storage.Due{}, recordRef{}, false
	}
	rk, err := t.e.k.record(b, id)
	if err != nil {
		return storage.Due{}, recordRef{}, false
	}
	return storage.Due{Kind: kind, ID: id}, recordRef{b, rk}, true
}

// denyScript appends one entry to the change log inside EXEC, so that the
// sequence number is taken in commit order. The sequence never falls below
// the clock (ms × 1000, ARGV[1]): after Redis restarted empty, new entries
// still sort after the cursors that issuer instances hold. It also indexes
// the log entry for Purge (at Until) and publishes the entry to the
// instances' subscribers.
//
// KEYS: denyseq, denylog, expiry. ARGV: floor, "untilNanos kind id",
// until in ms, channel.
const denyScript = `
local seq = redis.call('INCR', KEYS[1])
local floor = tonumber(ARGV[1])
if seq < floor then
  seq = floor
  redis.call('SET', KEYS[1], ARGV[1])
end
local m = string.format('%d', seq) .. ' ' .. ARGV[2]
redis.call('ZADD', KEYS[2], seq, m)
redis.call('ZADD', KEYS[3], ARGV[3], 'l' .. m)
redis.call('PUBLISH', ARGV[4], ARGV[2])
return seq
`

func (t *tx) AppendLog(e storage.DenyEntry) error {
	if err := t.writable(); err != nil {
		return err
	}
	if strings.ContainsAny(string(e.Kind), " \x00") || e.Kind == "" {
		return fmt.Errorf("redis: denylist kind %q", e.Kind)
	}
	floor := t.e.cfg.Now().UnixMilli() * 1000
	entry := encodeEntry(e)
	untilMS := e.Until.UnixMilli()
	k := t.e.k
	t.ops = append(t.ops, func(p goredis.Pipeliner) {
		p.Eval(t.ctx, denyScript, []string{k.denyseq(), k.denylog(), k.expiry()}, floor, entry, untilMS, k.channel())
	})
	return nil
}

// Log reads the change log, a sorted set scored by cursor.
func (t *tx) Log(after storage.Cursor, limit int) ([]storage.LogEntry, error) {
	by := &goredis.ZRangeBy{Min: "(" + strconv.FormatUint(uint64(after), 10), Max: "+inf"}
	if limit > 0 {
		by.Count = int64(limit)
	}
	members, err := t.e.rdb.ZRangeByScore(t.ctx, t.e.k.denylog(), by).Result()
	if err != nil {
		return nil, fault("read change log", err)
	}
	out := make([]storage.LogEntry, 0, len(members))
	for _, m := range members {
		seq, e, err := decodeLogMember(m)
		if err != nil {
			return nil, fmt.Errorf("redis: change log entry %q: %w", m, err)
		}
		out = append(out, storage.LogEntry{Cursor: storage.Cursor(seq), Entry: e})
	}
	return out, nil
}

func (t *tx) DeleteLog(c storage.Cursor) error {
	if err := t.writable(); err != nil {
		return err
	}
	s := strconv.FormatUint(uint64(c), 10)
	t.ops = append(t.ops, func(p goredis.Pipeliner) { p.ZRemRangeByScore(t.ctx, t.e.k.denylog(), s, s) })
	return nil
}

// commit sends the queued writes in MULTI/EXEC; a set that gained a
// member lives at least as long as that member's record.
func (t *tx) commit() error {
	if len(t.ops) == 0 {
		return nil
	}
	for _, sm := range t.setTTL {
		at, ok := t.expires[sm.expiry]
		if !ok {
			continue
		}
		key, ms := sm.key, at.Add(t.e.cfg.TTLGrace).UnixMilli()
		t.ops = append(t.ops, func(p goredis.Pipeliner) {
			// A key without TTL counts as infinite for GT, so a fresh set
			// gets its TTL from the NX form first.
			p.Do(t.ctx, "pexpireat", key, ms, "nx")
			p.Do(t.ctx, "pexpireat", key, ms, "gt")
		})
	}
	cmds, err := t.rtx.TxPipelined(t.ctx, func(p goredis.Pipeliner) error {
		for _, op := range t.ops {
			op(p)
		}
		return nil
	})
	if err != nil {
		return err
	}
	for _, c := range cmds {
		if err := c.Err(); err != nil && !errors.Is(err, goredis.Nil) {
			return err
		}
	}
	return nil
}

// decodeValue turns a read's reply into the engine's value of bucket b:
// nil for a missing key.
func decodeValue(b storage.Bucket, c goredis.Cmder) ([]byte, error) {
	if b == storage.BucketLoginFailures {
		v, err := c.(*goredis.SliceCmd).Result()
		if err != nil {
			return nil, err
		}
		return decodeThrottle(v)
	}
	s, err := c.(*goredis.StringCmd).Result()
	if errors.Is(err, goredis.Nil) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	if b == storage.BucketDeny {
		// The store before the engines wrote Until as decimal Unix
		// nanoseconds.
		ns, err := strconv.ParseInt(s, 10, 64)
		if err != nil || ns < 0 {
			return nil, fmt.Errorf("denylist entry %q is not Unix nanoseconds", s)
		}
		return binary.BigEndian.AppendUint64(nil, uint64(ns)), nil
	}
	return []byte(s), nil
}

// The throttle's state of one key is a hash: c (failures in the current
// window), s (the window's start, ms; 0: none open), k (lockouts so far),
// l (end of the latest lockout, ms; 0: none), e (when the state is
// forgotten, ms). Its JSON form in the rules (storage's loginRecord) uses
// the same letters; throttleRecord mirrors it, and the contract suite over
// the plain rules on this engine checks that they agree.
var throttleFields = []string{"c", "s", "k", "l", "e"}

type throttleRecord struct {
	Count       int       `json:"c"`
	Start       time.Time `json:"s"`
	Lockouts    int       `json:"k"`
	LockedUntil time.Time `json:"l"`
	Expires     time.Time `json:"e"`
}

func msOf(t time.Time) int64 {
	if t.IsZero() {
		return 0
	}
	return t.UnixMilli()
}

func timeOf(ms int64) time.Time {
	if ms == 0 {
		return time.Time{}
	}
	return time.UnixMilli(ms).UTC()
}

func encodeThrottle(value []byte) ([]any, error) {
	var r throttleRecord
	dec := json.NewDecoder(strings.NewReader(string(value)))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&r); err != nil {
		return nil, err
	}
	return []any{"c", r.Count, "s", msOf(r.Start), "k", r.Lockouts, "l", msOf(r.LockedUntil), "e", msOf(r.Expires)}, nil
}

func decodeThrottle(v []any) ([]byte, error) {
	n := make([]int64, len(throttleFields))
	found := false
	for i, x := range v {
		if x == nil {
			continue
		}
		found = true
		s, _ := x.(string)
		var err error
		if n[i], err = strconv.ParseInt(s, 10, 64); err != nil {
			return nil, fmt.Errorf("throttle field %s is %q, not a number", throttleFields[i], s)
		}
	}
	if !found {
		return nil, nil
	}
	return json.Marshal(throttleRecord{Count: int(n[0]), Start: timeOf(n[1]), Lockouts: int(n[2]), LockedUntil: timeOf(n[3]), Expires: timeOf(n[4])})
}

// encodeEntry is "untilNanos kind id": the log member after its sequence,
// and the pub/sub message.
func encodeEntry(e storage.DenyEntry) string {
	return strconv.FormatInt(e.Until.UnixNano(), 10) + " " + string(e.Kind) + " " + e.ID
}

func decodeEntry(s string) (storage.DenyEntry, error) {
	f := strings.SplitN(s, " ", 3)
	if len(f) != 3 || f[1] == "" {
		return storage.DenyEntry{}, errors.New("want \"until kind id\"")
	}
	ns, err := strconv.ParseInt(f[0], 10, 64)
	if err != nil {
		return storage.DenyEntry{}, fmt.Errorf("until: %w", err)
	}
	// Only the form encodeEntry writes ("-01" or "+1" would decode to a
	// record that encodes otherwise: a member no writer made).
	if strconv.FormatInt(ns, 10) != f[0] {
		return storage.DenyEntry{}, errors.New("until: not a canonical integer")
	}
	return storage.DenyEntry{Kind: storage.DenyKind(f[1]), ID: f[2], Until: time.Unix(0, ns).UTC()}, nil
}

// decodeLogMember splits "seq untilNanos kind id".
func decodeLogMember(m string) (uint64, storage.DenyEntry, error) {
	seqStr, rest, ok := strings.Cut(m, " ")
	if !ok {
		return 0, storage.DenyEntry{}, errors.New("no sequence")
	}
	seq, err := strconv.ParseUint(seqStr, 10, 64)
	if err != nil {
		return 0, storage.DenyEntry{}, fmt.Errorf("sequence: %w", err)
	}
	if strconv.FormatUint(seq, 10) != seqStr {
		return 0, storage.DenyEntry{}, errors.New("sequence: not a canonical integer")
	}
	e, err := decodeEntry(rest)
	return seq, e, err
}
