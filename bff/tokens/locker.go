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

// MemoryLocker is the in-process Locker: a mutex per key, created on
// demand and dropped when released.
type MemoryLocker struct {
	mu   sync.Mutex
	held map[string]chan struct{}
}

var _ Locker = (*MemoryLocker)(nil)

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
