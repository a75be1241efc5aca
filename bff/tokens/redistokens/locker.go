package redistokens

import (
	"context"
	"crypto/rand"
	"crypto/subtle"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	mrand "math/rand/v2"
	"sync"
	"sync/atomic"
	"time"

	goredis "github.com/redis/go-redis/v9"

	"github.com/bffgate/bffgate/bff/tokens"
)

// DefaultPrefix starts every key when the prefix given is empty.
const DefaultPrefix = "bffgate:tokens:"

// Defaults of the Locker options.
const (
	DefaultPollMin = 2 * time.Millisecond
	DefaultPollMax = 50 * time.Millisecond
	DefaultMaxHold = 2 * time.Minute
	// releaseTimeout bounds the unlock's round trip; past it the lock
	// frees itself when its ttl runs out.
	releaseTimeout = 5 * time.Second
)

// The scripts compare the lock's value with the caller's token before they
// touch it, in one atomic step: GET then DEL from the client could delete
// a lock that expired and was taken by another holder in between.
var (
	releaseScript = goredis.NewScript(`
if redis.call("GET", KEYS[1]) == ARGV[1] then
	return redis.call("DEL", KEYS[1])
end
return 0`)
	extendScript = goredis.NewScript(`
if redis.call("GET", KEYS[1]) == ARGV[1] then
	return redis.call("PEXPIRE", KEYS[1], ARGV[2])
end
return 0`)
)

// Locker is a tokens.Locker on Redis (see the package doc). It is safe for
// concurrent use. It does not own the client: the caller closes it.
type Locker struct {
	rdb     goredis.UniversalClient
	prefix  string
	pollMin time.Duration
	pollMax time.Duration
	maxWait time.Duration
	maxHold time.Duration
	log     *slog.Logger
}

var _ tokens.FencedLocker = (*Locker)(nil)

// Option configures a Locker.
type Option func(*Locker)

// WithPoll sets the back-off of callers waiting for a held lock: the
// first wait is about min, each next one doubles, up to max (defaults
// DefaultPollMin, DefaultPollMax). Non-positive values keep the default.
func WithPoll(min, max time.Duration) Option {
	return func(l *Locker) {
		if min > 0 {
			l.pollMin = min
		}
		if max > 0 {
			l.pollMax = max
		}
	}
}

// WithMaxWait bounds how long Lock waits for a held lock when its context
// allows longer; zero (the default) means the ttl of the Lock call. The
// Manager calls Lock with a context that does not end with the request
// (a refresh must not be abandoned half-way), so this is what bounds the
// wait.
func WithMaxWait(d time.Duration) Option {
	return func(l *Locker) { l.maxWait = d }
}

// WithMaxHold bounds how long a holder's lock is kept alive past its ttl
// (default DefaultMaxHold); a negative value turns the keep-alive off, so
// the lock lasts ttl at most.
func WithMaxHold(d time.Duration) Option {
	return func(l *Locker) { l.maxHold = d }
}

// WithLogger sets the logger for failed releases and lost locks; nil (the
// default) means none.
func WithLogger(log *slog.Logger) Option {
	return func(l *Locker) {
		if log != nil {
			l.log = log
		}
	}
}

// NewLocker returns a Locker on client whose keys start with prefix
// (DefaultPrefix when empty). A nil client gives a Locker whose every Lock
// fails with tokens.ErrLockUnavailable, naming the problem.
func NewLocker(client goredis.UniversalClient, prefix string, opts ...Option) *Locker {
	if prefix == "" {
		prefix = DefaultPrefix
	}
	l := &Locker{
		rdb: client, prefix: prefix,
		pollMin: DefaultPollMin, pollMax: DefaultPollMax, maxHold: DefaultMaxHold,
		log: slog.New(slog.DiscardHandler),
	}
	for _, o := range opts {
		o(l)
	}
	if l.pollMax < l.pollMin {
		l.pollMax = l.pollMin
	}
	l.log = l.log.With("subsystem", "tokens.redis")
	return l
}

// Lock implements tokens.Locker: it returns once this caller holds the
// lock on key, and the returned function releases it (once; later calls do
// nothing). A release that fails is logged and the lock expires by itself.
func (l *Locker) Lock(ctx context.Context, key string, ttl time.Duration) (func(), error) {
	lease, err := l.Acquire(ctx, key, ttl)
	if err != nil {
		return nil, err
	}
	return lease.unlockFunc(ctx), nil
}

// LockFenced implements tokens.FencedLocker: Lock plus held, the fencing
// check. held reports nil while this caller still holds the lock,
// ErrLockLost (matching tokens.ErrLockLost) once it does not, or an error
// matching tokens.ErrLockUnavailable when Redis cannot say. The Manager
// prefers it to Lock.
func (l *Locker) LockFenced(ctx context.Context, key string, ttl time.Duration) (unlock func(), held func(context.Context) error, err error) {
	lease, err := l.Acquire(ctx, key, ttl)
	if err != nil {
		return nil, nil, err
	}
	return lease.unlockFunc(ctx), lease.Held, nil
}

// Acquire takes the lock on key for ttl, waiting (with back-off) while
// another holder has it, until ctx ends or the MaxWait option passes.
// Errors match tokens.ErrLockUnavailable.
func (l *Locker) Acquire(ctx context.Context, key string, ttl time.Duration) (*Lease, error) {
	if l.rdb == nil {
		return nil, fmt.Errorf("%w: redistokens: the Locker has no Redis client (NewLocker was given nil)", tokens.ErrLockUnavailable)
	}
	if ttl < time.Millisecond {
		return nil, fmt.Errorf("%w: redistokens: lock ttl %v is below Redis's 1ms resolution; give the lock a positive ttl (tokens.Config.LockTTL)", tokens.ErrLockUnavailable, ttl)
	}
	tok, err := newToken()
	if err != nil {
		return nil, fmt.Errorf("%w: redistokens: reading random bytes for the lock token: %w", tokens.ErrLockUnavailable, err)
	}
	maxWait := l.maxWait
	if maxWait <= 0 {
		maxWait = ttl
	}
	wctx, cancel := context.WithTimeout(ctx, maxWait)
	defer cancel()

	rkey := l.prefix + "lock:" + key
	delay := l.pollMin
	var timer *time.Timer
	for {
		ok, err := l.rdb.SetNX(wctx, rkey, tok, ttl).Result()
		if err != nil {
			// The SET may have reached Redis before the reply was lost:
			// take back what might be ours rather than leave it for ttl,
			// without making the caller wait for it.
			go l.release(context.WithoutCancel(ctx), rkey, tok)
			return nil, l.waitErr(ctx, wctx, maxWait, fmt.Errorf("taking the refresh lock: %w", err))
		}
		if ok {
			x := &Lease{l: l, key: rkey, token: tok, ttl: ttl, stop: make(chan struct{}), done: make(chan struct{})}
			if l.maxHold > 0 {
				go x.keepAlive(l.maxHold)
			} else {
				close(x.done)
			}
			return x, nil
		}
		// Full jitter over [delay/2, delay] keeps the waiters of several
		// instances from polling in step. Not a secret: math/rand.
		d := delay/2 + mrand.N(delay/2+1)
		if timer == nil {
			timer = time.NewTimer(d)
			defer timer.Stop()
		} else {
			timer.Reset(d)
		}
		select {
		case <-timer.C:
		case <-wctx.Done():
			return nil, l.waitErr(ctx, wctx, maxWait, errStillHeld)
		}
		delay = min(2*delay, l.pollMax)
	}
}

// waitErr wraps err with tokens.ErrLockUnavailable and says why: the
// caller gave up, the wait bound passed, or Redis did not answer.
func (l *Locker) waitErr(ctx context.Context, wctx context.Context, maxWait time.Duration, err error) error {
	switch {
	case ctx.Err() != nil:
		return fmt.Errorf("%w: redistokens: %w (the request ended: %w)", tokens.ErrLockUnavailable, err, ctx.Err())
	case wctx.Err() != nil:
		return fmt.Errorf("%w: redistokens: waited %v for the refresh lock: %w", tokens.ErrLockUnavailable, maxWait, err)
	default:
		return fmt.Errorf("%w: redistokens: Redis unavailable: %w", tokens.ErrLockUnavailable, err)
	}
}

// release deletes rkey if it still holds tok; held reports whether it did.
func (l *Locker) release(ctx context.Context, rkey, tok string) (held bool, err error) {
	ctx, cancel := context.WithTimeout(ctx, releaseTimeout)
	defer cancel()
	n, err := releaseScript.Run(ctx, l.rdb, []string{rkey}, tok).Int64()
	if err != nil {
		return false, fmt.Errorf("%w: redistokens: releasing the refresh lock: %w", tokens.ErrLockUnavailable, err)
	}
	return n == 1, nil
}

func newToken() (string, error) {
	b := make([]byte, 16)
	if _, err := rand.Read(b); err != nil {
		return "", err
	}
	return hex.EncodeToString(b), nil
}

// Lease is one holding of a lock, from Acquire. Its methods are safe for
// concurrent use.
type Lease struct {
	l     *Locker
	key   string
	token string
	ttl   time.Duration
	lost  atomic.Bool
	stop  chan struct{}
	done  chan struct{}
	once  sync.Once
}

// Held is the fencing check: nil while this lease still holds the lock,
// ErrLockLost once it does not (it expired, or another holder took it),
// or an error matching tokens.ErrLockUnavailable when Redis cannot say.
func (x *Lease) Held(ctx context.Context) error {
	if x.lost.Load() {
		return ErrLockLost
	}
	v, err := x.l.rdb.Get(ctx, x.key).Result()
	if errors.Is(err, goredis.Nil) {
		x.lost.Store(true)
		return ErrLockLost
	}
	if err != nil {
		return fmt.Errorf("%w: redistokens: checking the refresh lock: %w", tokens.ErrLockUnavailable, err)
	}
	if subtle.ConstantTimeCompare([]byte(v), []byte(x.token)) != 1 {
		x.lost.Store(true)
		return ErrLockLost
	}
	return nil
}

// Release stops the keep-alive and deletes the lock if this lease still
// holds it. It returns ErrLockLost when the lock was no longer this
// lease's (nothing is deleted: it expired, or it is another holder's now),
// or an error matching tokens.ErrLockUnavailable when Redis did not
// answer (the lock then frees itself after its ttl).
func (x *Lease) Release(ctx context.Context) error {
	x.once.Do(func() { close(x.stop) })
	<-x.done
	held, err := x.l.release(ctx, x.key, x.token)
	if err != nil {
		return err
	}
	if !held {
		x.lost.Store(true)
		return ErrLockLost
	}
	return nil
}

// unlockFunc is Lock's release function: once, on a context that outlives
// the caller's cancellation.
func (x *Lease) unlockFunc(ctx context.Context) func() {
	ctx = context.WithoutCancel(ctx)
	var once sync.Once
	return func() {
		once.Do(func() {
			if err := x.Release(ctx); errors.Is(err, ErrLockLost) {
				x.l.log.Warn("refresh lock had expired before its release; raise tokens.Config.LockTTL above the token endpoint's timeout", slog.Duration("ttl", x.ttl))
			} else if err != nil {
				x.l.log.Warn("refresh lock not released; it expires by itself", slog.Duration("ttl", x.ttl), slog.Any("err", err))
			}
		})
	}
}

// extend moves the lock's expiry to ttl from now if this lease still
// holds it.
func (x *Lease) extend(ctx context.Context) (held bool, err error) {
	n, err := extendScript.Run(ctx, x.l.rdb, []string{x.key}, x.token, x.ttl.Milliseconds()).Int64()
	if err != nil {
		return false, err
	}
	return n == 1, nil
}

// keepAlive extends the lock every ttl/3 until the lease is released, the
// lock is lost, the client is closed or maxHold has passed. A failed
// extension is retried at the next tick: if Redis stays away the lock
// expires, which is what a crashed holder's lock does too.
func (x *Lease) keepAlive(maxHold time.Duration) {
	defer close(x.done)
	every := max(x.ttl/3, time.Millisecond)
	tick := time.NewTicker(every)
	defer tick.Stop()
	limit := time.NewTimer(maxHold)
	defer limit.Stop()
	for {
		select {
		case <-x.stop:
			return
		case <-limit.C:
			x.l.log.Warn("refresh lock held longer than its maximum; no longer extended", slog.Duration("max_hold", maxHold))
			return
		case <-tick.C:
			ctx, cancel := context.WithTimeout(context.Background(), every)
			held, err := x.extend(ctx)
			cancel()
			switch {
			case errors.Is(err, goredis.ErrClosed):
				return
			case err != nil:
				x.l.log.Debug("refresh lock not extended; retrying", slog.Any("err", err))
			case !held:
				x.lost.Store(true)
				x.l.log.Warn("refresh lock lost while held (it expired, or another instance took it)")
				return
			}
		}
	}
}
