package storagetest

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/bffgate/bffgate/issuer/storage"
)

// The login throttle's contract: counting, lockouts that double up to a
// cap, the window, expiry, reset, and atomic counting under concurrency.

var testPolicy = storage.LoginPolicy{MaxFailures: 3, Window: 10 * time.Minute, Lockout: time.Minute, MaxLockout: 4 * time.Minute}

// recordFailure calls RecordLoginFailure and fails the test on an error.
func recordFailure(t *testing.T, s storage.Store, key string, at time.Time, p storage.LoginPolicy) storage.LoginFailures {
	t.Helper()
	f, err := s.RecordLoginFailure(context.Background(), key, at, p)
	if err != nil {
		t.Fatalf("RecordLoginFailure(%s, %s): %v", key, at.Format(time.RFC3339Nano), err)
	}
	return f
}

func loginState(t *testing.T, s storage.Store, key string, at time.Time) storage.LoginFailures {
	t.Helper()
	f, err := s.LoginFailures(context.Background(), key, at)
	if err != nil {
		t.Fatalf("LoginFailures(%s): %v", key, err)
	}
	return f
}

func wantState(t *testing.T, what string, got storage.LoginFailures, want storage.LoginFailures) {
	t.Helper()
	if got.Count != want.Count || got.Lockouts != want.Lockouts || !got.LockedUntil.Equal(want.LockedUntil) || got.Started != want.Started {
		t.Fatalf("%s = %+v, want %+v", what, got, want)
	}
}

func testLoginLockout(t *testing.T, s storage.Store) {
	now := base()
	const key = "u:lockout"
	wantState(t, "LoginFailures of an unknown key", loginState(t, s, key, now), storage.LoginFailures{})

	wantState(t, "first failure", recordFailure(t, s, key, now, testPolicy), storage.LoginFailures{Count: 1})
	wantState(t, "second failure", recordFailure(t, s, key, now.Add(time.Second), testPolicy), storage.LoginFailures{Count: 2})
	t0 := now.Add(2 * time.Second)
	lock := storage.LoginFailures{Lockouts: 1, LockedUntil: t0.Add(time.Minute)}
	started := lock
	started.Started = true
	wantState(t, "third failure (MaxFailures)", recordFailure(t, s, key, t0, testPolicy), started)
	if !lock.Locked(t0) || !lock.Locked(lock.LockedUntil.Add(-time.Millisecond)) || lock.Locked(lock.LockedUntil) {
		t.Fatal("Locked does not hold from the lockout's start to just before its end")
	}
	wantState(t, "LoginFailures during the lockout", loginState(t, s, key, t0.Add(30*time.Second)), lock)
	// A failure during the lockout (a request that passed the check
	// before the lock began) neither counts nor extends it.
	wantState(t, "failure during the lockout", recordFailure(t, s, key, t0.Add(30*time.Second), testPolicy), lock)
	wantState(t, "another key", loginState(t, s, "u:other", t0), storage.LoginFailures{})

	// Each further lockout doubles, up to MaxLockout (4m).
	at := lock.LockedUntil
	wantState(t, "LoginFailures when the lockout ends", loginState(t, s, key, at), lock)
	for i, wait := range []time.Duration{2 * time.Minute, 4 * time.Minute, 4 * time.Minute} {
		recordFailure(t, s, key, at, testPolicy)
		recordFailure(t, s, key, at, testPolicy)
		got := recordFailure(t, s, key, at, testPolicy)
		wantState(t, fmt.Sprintf("lockout %d", i+2), got, storage.LoginFailures{Lockouts: i + 2, LockedUntil: at.Add(wait), Started: true})
		at = got.LockedUntil
	}
}

func testLoginWindow(t *testing.T, s storage.Store) {
	now := base()
	const key = "a:window"
	recordFailure(t, s, key, now, testPolicy)
	recordFailure(t, s, key, now.Add(time.Minute), testPolicy)
	// The window runs from its first failure: at now+Window the count
	// starts again, so the third failure does not lock.
	w2 := now.Add(testPolicy.Window)
	wantState(t, "failure at the window's end", recordFailure(t, s, key, w2, testPolicy), storage.LoginFailures{Count: 1})
	wantState(t, "second failure of the new window", recordFailure(t, s, key, w2.Add(time.Second), testPolicy), storage.LoginFailures{Count: 2})
	t0 := w2.Add(testPolicy.Window - time.Millisecond)
	wantState(t, "third failure just inside the new window", recordFailure(t, s, key, t0, testPolicy),
		storage.LoginFailures{Lockouts: 1, LockedUntil: t0.Add(time.Minute), Started: true})

	// The lockouts are remembered until Window has passed after the last
	// one ended, then forgotten: the next lockout is the first again.
	end := t0.Add(time.Minute)
	wantState(t, "state just before it expires", loginState(t, s, key, end.Add(testPolicy.Window-time.Millisecond)),
		storage.LoginFailures{Lockouts: 1, LockedUntil: end})
	gone := end.Add(testPolicy.Window)
	wantState(t, "state once expired", loginState(t, s, key, gone), storage.LoginFailures{})
	recordFailure(t, s, key, gone, testPolicy)
	recordFailure(t, s, key, gone, testPolicy)
	wantState(t, "lockout after the state expired", recordFailure(t, s, key, gone, testPolicy),
		storage.LoginFailures{Lockouts: 1, LockedUntil: gone.Add(time.Minute), Started: true})

	// Purge leaves live state alone and may remove expired state.
	const live = "a:live"
	recordFailure(t, s, live, gone, testPolicy)
	if _, err := s.Purge(context.Background(), gone.Add(time.Minute)); err != nil {
		t.Fatalf("Purge: %v", err)
	}
	wantState(t, "live state after Purge", loginState(t, s, live, gone.Add(time.Minute)), storage.LoginFailures{Count: 1})
	if _, err := s.Purge(context.Background(), gone.Add(time.Hour)); err != nil {
		t.Fatalf("Purge: %v", err)
	}
	wantState(t, "expired state after Purge", loginState(t, s, live, gone.Add(time.Hour)), storage.LoginFailures{})
	wantState(t, "failure after Purge", recordFailure(t, s, live, gone.Add(time.Hour), testPolicy), storage.LoginFailures{Count: 1})
}

func testLoginReset(t *testing.T, s storage.Store) {
	ctx := context.Background()
	now := base()
	const key = "u:reset"
	reset := func(what string, at time.Time, want storage.LoginFailures) {
		t.Helper()
		f, err := s.ResetLoginFailures(ctx, key, at)
		if err != nil {
			t.Fatalf("ResetLoginFailures %s: %v", what, err)
		}
		wantState(t, "ResetLoginFailures "+what, f, want)
	}
	reset("of an unknown key", now, storage.LoginFailures{})
	recordFailure(t, s, key, now, testPolicy)
	recordFailure(t, s, key, now, testPolicy)
	reset("after two failures", now, storage.LoginFailures{})
	wantState(t, "state after reset", loginState(t, s, key, now), storage.LoginFailures{})
	wantState(t, "failure after reset", recordFailure(t, s, key, now, testPolicy), storage.LoginFailures{Count: 1})

	// A locked key stays locked: the reset returns the lock.
	recordFailure(t, s, key, now, testPolicy)
	lock := recordFailure(t, s, key, now, testPolicy)
	if !lock.Started {
		t.Fatalf("third failure = %+v, want a lockout", lock)
	}
	lock.Started = false
	reset("of a locked key", now.Add(time.Second), lock)
	wantState(t, "state after resetting a locked key", loginState(t, s, key, now.Add(time.Second)), lock)

	// Once the lockout has ended the reset forgets it too.
	reset("after the lockout", lock.LockedUntil, storage.LoginFailures{})
	at := lock.LockedUntil
	recordFailure(t, s, key, at, testPolicy)
	recordFailure(t, s, key, at, testPolicy)
	wantState(t, "lockout after a reset", recordFailure(t, s, key, at, testPolicy),
		storage.LoginFailures{Lockouts: 1, LockedUntil: at.Add(time.Minute), Started: true})
}

func testLoginConcurrent(t *testing.T, s storage.Store) {
	now := base()
	const n = 24
	many := storage.LoginPolicy{MaxFailures: 1000, Window: time.Hour, Lockout: time.Minute, MaxLockout: time.Hour}
	var wg sync.WaitGroup
	results := make(chan storage.LoginFailures, 2*n)
	errs := make(chan error, 2*n)
	for range n {
		wg.Add(2)
		go func() {
			defer wg.Done()
			if _, err := s.RecordLoginFailure(context.Background(), "a:count", now, many); err != nil {
				errs <- err
			}
		}()
		go func() {
			defer wg.Done()
			f, err := s.RecordLoginFailure(context.Background(), "u:lock", now, testPolicy)
			if err != nil {
				errs <- err
				return
			}
			results <- f
		}()
	}
	wg.Wait()
	close(errs)
	close(results)
	for err := range errs {
		t.Fatalf("concurrent RecordLoginFailure: %v", err)
	}
	// Every failure is counted once...
	wantState(t, "count after concurrent failures", loginState(t, s, "a:count", now), storage.LoginFailures{Count: n})
	// ...and of the requests racing on one key exactly one starts the
	// lockout; the others find it locked or counted before it.
	startedN := 0
	for f := range results {
		if f.Started {
			startedN++
		}
	}
	if startedN != 1 {
		t.Fatalf("%d of %d concurrent failures started a lockout, want exactly 1", startedN, n)
	}
	wantState(t, "state after the concurrent lockout", loginState(t, s, "u:lock", now),
		storage.LoginFailures{Lockouts: 1, LockedUntil: now.Add(time.Minute)})
}

func testLoginInvalid(t *testing.T, s storage.Store) {
	ctx := context.Background()
	now := base()
	long := "u:" + strings.Repeat("x", storage.MaxLoginKeyLen)
	for _, key := range []string{"", long} {
		if _, err := s.RecordLoginFailure(ctx, key, now, testPolicy); err == nil {
			t.Errorf("RecordLoginFailure with a %d-byte key succeeded", len(key))
		}
		if _, err := s.LoginFailures(ctx, key, now); err == nil {
			t.Errorf("LoginFailures with a %d-byte key succeeded", len(key))
		}
		if _, err := s.ResetLoginFailures(ctx, key, now); err == nil {
			t.Errorf("ResetLoginFailures with a %d-byte key succeeded", len(key))
		}
	}
	for _, p := range []storage.LoginPolicy{
		{MaxFailures: 0, Window: time.Minute, Lockout: time.Minute, MaxLockout: time.Minute},
		{MaxFailures: 1, Window: 0, Lockout: time.Minute, MaxLockout: time.Minute},
		{MaxFailures: 1, Window: time.Minute, Lockout: 0, MaxLockout: time.Minute},
		{MaxFailures: 1, Window: time.Minute, Lockout: time.Minute, MaxLockout: time.Second},
	} {
		if _, err := s.RecordLoginFailure(ctx, "u:bad-policy", now, p); err == nil {
			t.Errorf("RecordLoginFailure with policy %+v succeeded", p)
		}
	}
	wantState(t, "state after refused calls", loginState(t, s, "u:bad-policy", now), storage.LoginFailures{})
}
