package redistokens

import (
	"context"
	"errors"
	"net"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	goredis "github.com/redis/go-redis/v9"

	"github.com/bffgate/bffgate/bff/tokens"
	"github.com/bffgate/bffgate/internal/redistest"
)

func ctxT(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	t.Cleanup(cancel)
	return ctx
}

func TestLockExclusive(t *testing.T) {
	t.Parallel()
	c1, c2 := redistest.Client(t), redistest.Client(t)
	prefix := redistest.Prefix(t, c1, "")
	l1, l2 := NewLocker(c1, prefix), NewLocker(c2, prefix)
	ctx := ctxT(t)

	unlock, err := l1.Lock(ctx, "k", time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	// Held by instance 1: instance 2 waits until its context gives up.
	short, cancel := context.WithTimeout(ctx, 30*time.Millisecond)
	_, err = l2.Lock(short, "k", time.Minute)
	cancel()
	if !errors.Is(err, tokens.ErrLockUnavailable) || !errors.Is(err, tokens.ErrProviderUnavailable) {
		t.Fatalf("second holder: %v, want ErrLockUnavailable (matching ErrProviderUnavailable)", err)
	}
	// A different key is free.
	u2, err := l2.Lock(ctx, "other", time.Minute)
	if err != nil {
		t.Fatalf("another key: %v", err)
	}
	u2()
	unlock()
	unlock() // a second call does nothing

	// Many holders over both instances: one at a time, all get through.
	const n = 40
	var inside, maxInside, done atomic.Int64
	var wg sync.WaitGroup
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			l := l1
			if i%2 == 1 {
				l = l2
			}
			unlock, err := l.Lock(ctx, "k", time.Minute)
			if err != nil {
				t.Error(err)
				return
			}
			cur := inside.Add(1)
			for {
				m := maxInside.Load()
				if cur <= m || maxInside.CompareAndSwap(m, cur) {
					break
				}
			}
			inside.Add(-1)
			done.Add(1)
			unlock()
		}()
	}
	wg.Wait()
	if maxInside.Load() != 1 || done.Load() != n {
		t.Fatalf("at most %d holders at once (want 1), %d of %d got the lock", maxInside.Load(), done.Load(), n)
	}
	if n, _ := c1.Exists(ctx, prefix+"lock:k").Result(); n != 0 {
		t.Errorf("the lock key remains after every holder released it")
	}
}

// A holder that crashes (its client gone, so no release and no keep-alive)
// blocks the session only until its ttl runs out.
func TestCrashedHolderExpires(t *testing.T) {
	t.Parallel()
	survivor := redistest.Client(t)
	prefix := redistest.Prefix(t, survivor, "")
	crashed := redistest.Client(t)
	ctx := ctxT(t)

	lease, err := NewLocker(crashed, prefix).Acquire(ctx, "k", 200*time.Millisecond)
	if err != nil {
		t.Fatal(err)
	}
	crashed.Close()
	<-lease.done // the keep-alive stopped with the client

	unlock, err := NewLocker(survivor, prefix).Lock(ctx, "k", time.Minute)
	if err != nil {
		t.Fatalf("the crashed holder's lock did not free itself: %v", err)
	}
	defer unlock()
	if err := lease.Held(ctx); err == nil {
		t.Errorf("the crashed holder still believes it holds the lock")
	}
}

// An expired holder can neither release nor extend its successor's lock,
// and its fencing check says it lost the lock.
func TestForeignUnlockRefused(t *testing.T) {
	t.Parallel()
	c1, c2 := redistest.Client(t), redistest.Client(t)
	prefix := redistest.Prefix(t, c1, "")
	ctx := ctxT(t)
	key := prefix + "lock:k"

	l1 := NewLocker(c1, prefix)
	unlock1, held1, err := l1.LockFenced(ctx, "k", time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	if err := held1(ctx); err != nil {
		t.Fatalf("fencing check of the holder: %v", err)
	}
	// The lock expires under holder 1 (as after a long stall): no sleep,
	// the test removes it as Redis would.
	c1.Del(ctx, key)
	b, err := NewLocker(c2, prefix).Acquire(ctx, "k", time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	before, _ := c2.Get(ctx, key).Result()
	c2.PExpire(ctx, key, 30*time.Second)

	if err := held1(ctx); !errors.Is(err, ErrLockLost) {
		t.Errorf("fencing check after takeover: %v, want ErrLockLost", err)
	}
	unlock1() // refused: logged, nothing deleted
	a := &Lease{l: l1, key: key, token: "not-the-holders-token", ttl: time.Minute, stop: make(chan struct{}), done: make(chan struct{})}
	close(a.done)
	if err := a.Release(ctx); !errors.Is(err, ErrLockLost) {
		t.Errorf("release with another token: %v, want ErrLockLost", err)
	}
	if held, err := a.extend(ctx); held || err != nil {
		t.Errorf("extend with another token: held %v, %v", held, err)
	}
	after, err := c2.Get(ctx, key).Result()
	if err != nil || after != before {
		t.Fatalf("the successor's lock was touched: %q -> %q (%v)", before, after, err)
	}
	if pttl, _ := c2.PTTL(ctx, key).Result(); pttl > 30*time.Second {
		t.Errorf("the successor's ttl was extended by the old holder: %v", pttl)
	}
	if err := b.Held(ctx); err != nil {
		t.Errorf("successor's fencing check: %v", err)
	}
	if err := b.Release(ctx); err != nil {
		t.Errorf("successor's release: %v", err)
	}
}

func TestKeepAliveExtends(t *testing.T) {
	t.Parallel()
	c := redistest.Client(t)
	prefix := redistest.Prefix(t, c, "")
	ctx := ctxT(t)
	// maxHold < 0: no background extension, so the test drives it.
	x, err := NewLocker(c, prefix, WithMaxHold(-1)).Acquire(ctx, "k", time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	c.PExpire(ctx, x.key, 5*time.Second)
	held, err := x.extend(ctx)
	if !held || err != nil {
		t.Fatalf("extend: held %v, %v", held, err)
	}
	if pttl, _ := c.PTTL(ctx, x.key).Result(); pttl <= 5*time.Second || pttl > time.Minute {
		t.Errorf("after extend the lock's ttl is %v, want about a minute", pttl)
	}
	if err := x.Release(ctx); err != nil {
		t.Fatal(err)
	}
	if err := x.Held(ctx); !errors.Is(err, ErrLockLost) {
		t.Errorf("after release: %v, want ErrLockLost", err)
	}
}

func TestGrace(t *testing.T) {
	t.Parallel()
	c := redistest.Client(t)
	prefix := redistest.Prefix(t, c, "")
	g := NewGrace(c, prefix)
	ctx := ctxT(t)

	if _, ok, err := g.Get(ctx, "grace:none"); ok || err != nil {
		t.Fatalf("missing record: ok %v, %v", ok, err)
	}
	val := []byte{0, 1, 2, 0xff, 'x'}
	if stored, err := g.Put(ctx, "grace:a", val, 1500*time.Millisecond); err != nil || !stored {
		t.Fatal(err)
	}
	// The first record wins: a second rotation of the same old token is
	// not stored over it.
	if stored, err := g.Put(ctx, "grace:a", []byte("second"), time.Second); err != nil || stored {
		t.Fatalf("second Put on a live key: stored %v, %v; want false", stored, err)
	}
	got, ok, err := g.Get(ctx, "grace:a")
	if !ok || err != nil || string(got) != string(val) {
		t.Fatalf("Get = %x, %v, %v", got, ok, err)
	}
	// Redis drops it after the ttl (checked on the key, not by waiting).
	if pttl, _ := c.PTTL(ctx, prefix+"grace:a").Result(); pttl <= 0 || pttl > 1500*time.Millisecond {
		t.Errorf("record ttl %v, want (0, 1.5s]", pttl)
	}
	for _, ttl := range []time.Duration{0, -time.Second} {
		if _, err := g.Put(ctx, "grace:b", val, ttl); err == nil {
			t.Errorf("Put with ttl %v stored a record that would never expire", ttl)
		}
	}
}

// Redis down: every error matches the sentinels the gateway turns into a
// 503, none panics, and nothing waits for long.
func TestUnavailable(t *testing.T) {
	t.Parallel()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	down := goredis.NewClient(&goredis.Options{Addr: addr, MaxRetries: -1})
	t.Cleanup(func() { down.Close() })
	ctx := ctxT(t)

	for name, l := range map[string]*Locker{"down": NewLocker(down, ""), "nil client": NewLocker(nil, "")} {
		if _, err := l.Lock(ctx, "k", time.Minute); !errors.Is(err, tokens.ErrLockUnavailable) || !errors.Is(err, tokens.ErrProviderUnavailable) {
			t.Errorf("%s: Lock: %v, want ErrLockUnavailable", name, err)
		}
	}
	if _, err := NewLocker(down, "").Acquire(ctx, "k", 0); !errors.Is(err, tokens.ErrLockUnavailable) {
		t.Errorf("zero ttl: %v", err)
	}
	for name, g := range map[string]*Grace{"down": NewGrace(down, ""), "nil client": NewGrace(nil, "")} {
		if _, err := g.Put(ctx, "grace:x", []byte("v"), time.Second); !errors.Is(err, tokens.ErrProviderUnavailable) {
			t.Errorf("%s: Put: %v", name, err)
		}
		if _, _, err := g.Get(ctx, "grace:x"); !errors.Is(err, tokens.ErrProviderUnavailable) {
			t.Errorf("%s: Get: %v", name, err)
		}
	}
}

func BenchmarkLockUnlock(b *testing.B) {
	c := redistest.Client(b)
	prefix := redistest.Prefix(b, c, "")
	l := NewLocker(c, prefix)
	ctx := context.Background()
	b.ReportAllocs()
	for b.Loop() {
		unlock, err := l.Lock(ctx, "bench", time.Minute)
		if err != nil {
			b.Fatal(err)
		}
		unlock()
	}
}
