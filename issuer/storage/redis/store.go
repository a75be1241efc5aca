package redis

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"time"

	goredis "github.com/redis/go-redis/v9"

	"github.com/bffgate/bffgate/issuer/storage"
)

// Config configures a Store.
type Config struct {
	// Prefix starts every key (and the pub/sub channel), keeping the
	// issuer's keys apart from other users of the Redis and letting an ACL
	// user be limited to them (~bffgate:*). Default "bffgate:". It must not
	// contain '{' or '}': the Store adds its own hash tag.
	Prefix string
	// TTLGrace is added to each record's expiry to give its Redis TTL, the
	// backstop that removes records when no instance purges. Purge removes
	// them at their expiry. Default 10 minutes.
	TTLGrace time.Duration
	// MaxRetries bounds how often a transaction is retried after losing an
	// optimistic race (WATCH). Default 50.
	MaxRetries int
	// PurgeBatch is how many expired records Purge removes per
	// transaction. Default 200.
	PurgeBatch int
	// Now is the clock that seeds the change-log sequence; nil means
	// time.Now. Record expiry always comes from the times callers pass.
	Now func() time.Time
	// Logger receives subscription failures; nil means slog.Default().
	Logger *slog.Logger
}

// DefaultConfig returns the defaults New fills in.
func DefaultConfig() Config {
	return Config{Prefix: "bffgate:", TTLGrace: 10 * time.Minute, MaxRetries: 50, PurgeBatch: 200}
}

// Store is a storage.Store on Redis. It is safe for concurrent use. It does
// not own the client: the caller closes it.
type Store struct {
	rdb goredis.UniversalClient
	cfg Config
	log *slog.Logger
	k   keys

	secretMu sync.Mutex // one Secret generation at a time in this process
}

var _ storage.Store = (*Store)(nil)

// New returns a Store on client.
func New(client goredis.UniversalClient, cfg Config) (*Store, error) {
	if client == nil {
		return nil, errors.New("redis: New: client is nil")
	}
	if _, ok := client.(*goredis.Ring); ok {
		return nil, errors.New("redis: New: a Ring client cannot keep the issuer's keys in one slot; use a single, Sentinel (failover) or Cluster client")
	}
	def := DefaultConfig()
	if cfg.Prefix == "" {
		cfg.Prefix = def.Prefix
	}
	if strings.ContainsAny(cfg.Prefix, "{}") {
		return nil, fmt.Errorf("redis: Config.Prefix %q contains '{' or '}'; remove them (the store adds the hash tag {issuer} itself)", cfg.Prefix)
	}
	switch {
	case cfg.TTLGrace < 0:
		return nil, fmt.Errorf("redis: Config.TTLGrace is %v; it must be positive (0 means %v)", cfg.TTLGrace, def.TTLGrace)
	case cfg.MaxRetries < 0:
		return nil, fmt.Errorf("redis: Config.MaxRetries is %d; it must be positive (0 means %d)", cfg.MaxRetries, def.MaxRetries)
	case cfg.PurgeBatch < 0:
		return nil, fmt.Errorf("redis: Config.PurgeBatch is %d; it must be positive (0 means %d)", cfg.PurgeBatch, def.PurgeBatch)
	}
	if cfg.TTLGrace == 0 {
		cfg.TTLGrace = def.TTLGrace
	}
	if cfg.MaxRetries == 0 {
		cfg.MaxRetries = def.MaxRetries
	}
	if cfg.PurgeBatch == 0 {
		cfg.PurgeBatch = def.PurgeBatch
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	return &Store{
		rdb: client,
		cfg: cfg,
		log: cfg.Logger.With("subsystem", "storage.redis"),
		k:   keys{base: cfg.Prefix + "{issuer}:"},
	}, nil
}

// keys names the Store's keys; see the package documentation.
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

// wrapErr adds the operation to err and classifies it: anything that is
// not an answer from Redis about the command itself (a refused or broken
// connection, a pool timeout, a closed client, a deadline, or a server that
// is loading, read-only or without a cluster quorum) also matches
// storage.ErrUnavailable, so callers answer 503 and retry later.
func wrapErr(op string, err error) error {
	if err == nil {
		return nil
	}
	if unavailable(err) {
		return fmt.Errorf("redis: %s: %w: %w", op, storage.ErrUnavailable, err)
	}
	return fmt.Errorf("redis: %s: %w", op, err)
}

// unavailable reports whether err means Redis could not be reached or
// could not serve, as opposed to a contract error or the caller's cancel.
func unavailable(err error) bool {
	switch {
	case errors.Is(err, context.Canceled),
		errors.Is(err, goredis.TxFailedErr),
		errors.Is(err, storage.ErrNotFound), errors.Is(err, storage.ErrExpired),
		errors.Is(err, storage.ErrAlreadyExists), errors.Is(err, storage.ErrCodeReused):
		return false
	case errors.Is(err, goredis.ErrClosed), errors.Is(err, goredis.ErrPoolTimeout),
		errors.Is(err, context.DeadlineExceeded):
		return true
	}
	var rerr goredis.Error
	if errors.As(err, &rerr) {
		msg := rerr.Error()
		for _, p := range []string{"LOADING", "READONLY", "MASTERDOWN", "CLUSTERDOWN", "TRYAGAIN", "BUSY ", "NOREPLICAS"} {
			if strings.HasPrefix(msg, p) {
				return true
			}
		}
		return false
	}
	var cb callbackError
	if errors.As(err, &cb) {
		return false
	}
	var ioErr interface{ Timeout() bool }
	if errors.As(err, &ioErr) {
		return true
	}
	// What remains comes from the connection (io.EOF, a reset, a refused
	// dial, a TLS failure), not from a command's reply.
	return !isContractErr(err)
}

// isContractErr reports errors the Store itself makes to refuse bad input
// or a broken record.
func isContractErr(err error) bool {
	var ce contractError
	return errors.As(err, &ce)
}

// contractError marks an error about the caller's input or a stored
// record, so that it is not taken for an unreachable backend.
type contractError struct{ err error }

func (e contractError) Error() string { return e.err.Error() }
func (e contractError) Unwrap() error { return e.err }

func invalid(format string, args ...any) error {
	return contractError{fmt.Errorf(format, args...)}
}

// callbackError marks an error returned by a caller's callback (mint, gen,
// fn) so that it reaches the caller unchanged rather than wrapped.
type callbackError struct{ err error }

func (e callbackError) Error() string { return e.err.Error() }

// errContention is returned when a transaction lost its optimistic race
// MaxRetries times in a row.
var errContention = errors.New("transaction kept conflicting with concurrent writers; retry the request")

// update runs fn in an optimistic transaction on the issuer's slot,
// retrying from the start when a watched key changed before EXEC. An error
// from a callback is returned unwrapped; contract errors are wrapped with
// op.
func (s *Store) update(ctx context.Context, op string, fn func(*txn) error) error {
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("redis: %s: %w", op, err)
	}
	for range s.cfg.MaxRetries {
		err := s.rdb.Watch(ctx, func(tx *goredis.Tx) error {
			t := &txn{s: s, ctx: ctx, tx: tx, vals: make(map[string]*string)}
			if err := fn(t); err != nil {
				return err
			}
			return t.commit()
		}, s.k.keyList())
		if errors.Is(err, goredis.TxFailedErr) {
			if err := ctx.Err(); err != nil {
				return fmt.Errorf("redis: %s: %w", op, err)
			}
			continue
		}
		var cb callbackError
		if errors.As(err, &cb) {
			return cb.err
		}
		var reused *storage.CodeReusedError
		if errors.As(err, &reused) {
			return err
		}
		return wrapErr(op, err)
	}
	return wrapErr(op, contractError{errContention})
}

// view runs reads outside a transaction.
func (s *Store) view(ctx context.Context, op string, fn func() error) error {
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("redis: %s: %w", op, err)
	}
	return wrapErr(op, fn())
}

// txn is one optimistic transaction: reads WATCH their keys first, writes
// are queued and sent in MULTI/EXEC by commit. vals overlays the queued
// writes so that later reads in the same transaction see them (nil: the
// key is known to be absent).
type txn struct {
	s    *Store
	ctx  context.Context
	tx   *goredis.Tx
	vals map[string]*string
	ops  []func(goredis.Pipeliner)
}

// get returns the values of keys (nil for a missing key), watching every
// key not read before in one round trip.
func (t *txn) get(keys ...string) ([]*string, error) {
	var need []string
	for _, k := range keys {
		if _, ok := t.vals[k]; !ok {
			need = append(need, k)
		}
	}
	if len(need) > 0 {
		cmds := make([]*goredis.StringCmd, len(need))
		_, err := t.tx.Pipelined(t.ctx, func(p goredis.Pipeliner) error {
			args := make([]any, 0, len(need)+1)
			args = append(args, "watch")
			for _, k := range need {
				args = append(args, k)
			}
			p.Do(t.ctx, args...)
			for i, k := range need {
				cmds[i] = p.Get(t.ctx, k)
			}
			return nil
		})
		if err != nil && !errors.Is(err, goredis.Nil) {
			return nil, err
		}
		for i, k := range need {
			v, err := cmds[i].Result()
			switch {
			case errors.Is(err, goredis.Nil):
				t.vals[k] = nil
			case err != nil:
				return nil, err
			default:
				t.vals[k] = &v
			}
		}
	}
	out := make([]*string, len(keys))
	for i, k := range keys {
		out[i] = t.vals[k]
	}
	return out, nil
}

func (t *txn) get1(key string) (*string, error) {
	v, err := t.get(key)
	if err != nil {
		return nil, err
	}
	return v[0], nil
}

// members returns a set's members, watching the set. Members added or
// removed by this transaction's queued writes are not reflected; callers
// check each member's record, which is.
func (t *txn) members(key string) ([]string, error) {
	var cmd *goredis.StringSliceCmd
	_, err := t.tx.Pipelined(t.ctx, func(p goredis.Pipeliner) error {
		p.Do(t.ctx, "watch", key)
		cmd = p.SMembers(t.ctx, key)
		return nil
	})
	if err != nil {
		return nil, err
	}
	return cmd.Val(), nil
}

// set queues SET key val with an absolute expiry (zero: none).
func (t *txn) set(key, val string, exp time.Time) {
	v := val
	t.vals[key] = &v
	if exp.IsZero() {
		t.ops = append(t.ops, func(p goredis.Pipeliner) { p.Set(t.ctx, key, val, 0) })
		return
	}
	ms := exp.Add(t.s.cfg.TTLGrace).UnixMilli()
	t.ops = append(t.ops, func(p goredis.Pipeliner) { p.Do(t.ctx, "set", key, val, "pxat", ms) })
}

func (t *txn) del(key string) {
	t.vals[key] = nil
	t.ops = append(t.ops, func(p goredis.Pipeliner) { p.Del(t.ctx, key) })
}

// queue adds a raw write.
func (t *txn) queue(op func(p goredis.Pipeliner)) { t.ops = append(t.ops, op) }

// expireAtLeast queues PEXPIREAT key (exp + grace) GT: a set's TTL only
// ever moves later, to its latest member's.
func (t *txn) expireAtLeast(key string, exp time.Time) {
	ms := exp.Add(t.s.cfg.TTLGrace).UnixMilli()
	t.queue(func(p goredis.Pipeliner) {
		// A key without TTL counts as infinite for GT, so a fresh set
		// gets its TTL from the NX form first.
		p.Do(t.ctx, "pexpireat", key, ms, "nx")
		p.Do(t.ctx, "pexpireat", key, ms, "gt")
	})
}

func (t *txn) commit() error {
	if len(t.ops) == 0 {
		return nil
	}
	cmds, err := t.tx.TxPipelined(t.ctx, func(p goredis.Pipeliner) error {
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
