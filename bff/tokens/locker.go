package tokens

import (
	"context"
	"fmt"
	"sync"
	"time"
)

// Locker serialises refreshes of one session. Lock blocks until the lock
// on key is held or ctx ends, and returns the function that releases it.
// ttl bounds how long a distributed implementation keeps the lock if its
// holder dies; the in-process one ignores it. Implementations are safe
// for concurrent use.
type Locker interface {
	Lock(ctx context.Context, key string, ttl time.Duration) (unlock func(), err error)
}

// FencedLocker is a Locker that can also tell its holder whether it still
// holds the lock: a distributed lock expires after its ttl, and a holder
// that stalled longer (a slow token endpoint, a paused process) may find
// that another instance took the lock and refreshed meanwhile. The
// Manager uses LockFenced instead of Lock when Config.Locker implements
// it, and calls held after the token endpoint answered, before it saves
// (see "Fencing" in the package doc).
//
// held returns nil while the caller still holds the lock, an error
// matching ErrLockLost once it does not, and any other error when the
// backend cannot say (the Manager then acts as if the lock was lost). The
// signature uses only func types so that an implementation needs no type
// of this package.
type FencedLocker interface {
	Locker
	LockFenced(ctx context.Context, key string, ttl time.Duration) (unlock func(), held func(context.Context) error, err error)
}

// MemoryLocker is the in-process Locker: a mutex per key, created on
// demand and dropped when released.
type MemoryLocker struct {
	mu   sync.Mutex
	held map[string]chan struct{}
}

var _ FencedLocker = (*MemoryLocker)(nil)

// NewMemoryLocker returns an in-process Locker.
func NewMemoryLocker() *MemoryLocker {
	return &MemoryLocker{held: map[string]chan struct{}{}}
}

// Lock implements Locker.
func (l *MemoryLocker) Lock(ctx context.Context, key string, _ time.Duration) (func(), error) {
	for {
		l.mu.Lock()
		ch, busy := l.held[key]
		if !busy {
			ch = make(chan struct{})
			l.held[key] = ch
			l.mu.Unlock()
			var once sync.Once
			return func() {
				once.Do(func() {
					l.mu.Lock()
					delete(l.held, key)
					l.mu.Unlock()
					close(ch)
				})
			}, nil
		}
		l.mu.Unlock()
		select {
		case <-ch:
		case <-ctx.Done():
			return nil, fmt.Errorf("%w: %v", ErrLockUnavailable, ctx.Err())
		}
	}
}

// LockFenced implements FencedLocker. An in-process lock is held until it
// is released, so held always reports nil.
func (l *MemoryLocker) LockFenced(ctx context.Context, key string, ttl time.Duration) (func(), func(context.Context) error, error) {
	unlock, err := l.Lock(ctx, key, ttl)
	if err != nil {
		return nil, nil, err
	}
	return unlock, func(context.Context) error { return nil }, nil
}
