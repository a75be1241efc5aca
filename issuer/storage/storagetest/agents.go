package storagetest

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/bffgate/bffgate/issuer/storage"
)

// agentStore is s as the agent features use it.
func agentStore(t *testing.T, s storage.Store) storage.AgentStore {
	t.Helper()
	return s
}

func testAssertionReplay(t *testing.T, s storage.Store) {
	a := agentStore(t, s)
	ctx := context.Background()
	now := base()
	exp := now.Add(time.Minute)
	if err := a.UseAssertion(ctx, "k1", exp, now); err != nil {
		t.Fatalf("first use: %v", err)
	}
	if err := a.UseAssertion(ctx, "k1", exp, now.Add(time.Second)); !errors.Is(err, storage.ErrReplayed) {
		t.Fatalf("second use = %v; want ErrReplayed", err)
	}
	if err := a.UseAssertion(ctx, "k2", exp, now); err != nil {
		t.Fatalf("another key: %v", err)
	}
	// Past its exp the key is free again (a jti is unique only within the
	// assertion's lifetime), purged or not.
	if err := a.UseAssertion(ctx, "k1", exp.Add(time.Minute), exp); err != nil {
		t.Fatalf("use after expiry: %v", err)
	}
	n, err := s.Purge(ctx, exp.Add(2*time.Minute))
	if err != nil || n < 2 {
		t.Fatalf("Purge = %d, %v; want both replay records removed", n, err)
	}
	if err := a.UseAssertion(ctx, "k2", exp.Add(time.Hour), exp.Add(3*time.Minute)); err != nil {
		t.Fatalf("use after purge: %v", err)
	}
	for _, bad := range []struct {
		key      string
		exp, now time.Time
	}{{"", exp, now}, {string(make([]byte, storage.MaxAssertionKeyLen+1)), exp, now}, {"k3", now, now}} {
		if err := a.UseAssertion(ctx, bad.key, bad.exp, bad.now); err == nil || errors.Is(err, storage.ErrReplayed) {
			t.Errorf("UseAssertion(%d-byte key, exp-now %v) = %v; want an argument error", len(bad.key), bad.exp.Sub(bad.now), err)
		}
	}
}

// testAssertionReplayConcurrent: of many concurrent uses of one key
// exactly one succeeds, whatever the engine's transactions.
func testAssertionReplayConcurrent(t *testing.T, s storage.Store) {
	a := agentStore(t, s)
	ctx := context.Background()
	now := base()
	var ok, replayed atomic.Int32
	var wg sync.WaitGroup
	for range 16 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			switch err := a.UseAssertion(ctx, "same", now.Add(time.Minute), now); {
			case err == nil:
				ok.Add(1)
			case errors.Is(err, storage.ErrReplayed):
				replayed.Add(1)
			default:
				t.Error(err)
			}
		}()
	}
	wg.Wait()
	if ok.Load() != 1 || replayed.Load() != 15 {
		t.Fatalf("%d uses succeeded and %d were replays; want 1 and 15", ok.Load(), replayed.Load())
	}
}

func testClientStates(t *testing.T, s storage.Store) {
	a := agentStore(t, s)
	ctx := context.Background()
	now := base()
	got, err := a.ClientStates(ctx)
	if err != nil || len(got) != 0 {
		t.Fatalf("ClientStates on an empty store = %v, %v", got, err)
	}
	_, cur, err := s.DenylistChanges(ctx, 0, 0)
	if err != nil {
		t.Fatal(err)
	}
	st, err := a.SetClientDisabled(ctx, "agent-1", true, now)
	if err != nil || !st.Disabled || !st.NotBefore.Equal(now) {
		t.Fatalf("disable = %+v, %v", st, err)
	}
	got, err = a.ClientStates(ctx)
	if err != nil || !got["agent-1"].Disabled || !got["agent-1"].NotBefore.Equal(now) || len(got) != 1 {
		t.Fatalf("ClientStates after disable = %+v, %v", got, err)
	}
	// The change is announced on the change log, for the other instances.
	changes, cur2, err := s.DenylistChanges(ctx, cur, 0)
	if err != nil || len(changes) != 1 || changes[0].Kind != storage.DenyClient || changes[0].ID != "agent-1" {
		t.Fatalf("DenylistChanges after disable = %+v, %v; want one %q entry", changes, err, storage.DenyClient)
	}
	// Denied knows nothing of it: a client entry denies no token by itself.
	if d, err := s.Denied(ctx, storage.DenyClient, "agent-1"); err != nil || d {
		t.Fatalf("Denied(client) = %v, %v; want false", d, err)
	}

	later := now.Add(time.Minute)
	st, err = a.SetClientDisabled(ctx, "agent-1", false, later)
	if err != nil || st.Disabled || !st.NotBefore.Equal(now) || !st.Changed.Equal(later) {
		t.Fatalf("enable = %+v, %v; want enabled, NotBefore kept at the disable", st, err)
	}
	if _, err := a.SetClientDisabled(ctx, "agent-2", true, later); err != nil {
		t.Fatal(err)
	}
	got, err = a.ClientStates(ctx)
	if err != nil || got["agent-1"].Disabled || !got["agent-2"].Disabled || len(got) != 2 {
		t.Fatalf("ClientStates = %+v, %v", got, err)
	}
	changes, _, err = s.DenylistChanges(ctx, cur2, 0)
	if err != nil || len(changes) != 2 {
		t.Fatalf("DenylistChanges after enable and a second disable = %+v, %v; want two entries", changes, err)
	}
	// Purge takes the announcements, never the states.
	if _, err := s.Purge(ctx, now.Add(48*time.Hour)); err != nil {
		t.Fatal(err)
	}
	if changes, _, err = s.DenylistChanges(ctx, 0, 0); err != nil || len(changes) != 0 {
		t.Fatalf("DenylistChanges after purge = %+v, %v; want none", changes, err)
	}
	if got, err = a.ClientStates(ctx); err != nil || len(got) != 2 || !got["agent-2"].Disabled {
		t.Fatalf("ClientStates after purge = %+v, %v; want both states kept", got, err)
	}
	if _, err := a.SetClientDisabled(ctx, "", true, now); err == nil {
		t.Fatal("SetClientDisabled with an empty id succeeded")
	}
}
