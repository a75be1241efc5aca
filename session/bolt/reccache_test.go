package bolt

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/bffgate/bffgate/session"
)

// Every kind of write is seen by the next Get, though Get serves
// remembered records.
func TestRecordCacheFollowsWrites(t *testing.T) {
	ctx := context.Background()
	now := time.Unix(1_800_000_000, 0)
	st, _, _ := newStore(t, func() time.Time { return now })
	mk := func(sid, sub string) string {
		t.Helper()
		h, err := st.Create(ctx, &session.Session{Subject: sub, SID: sid, Created: now, LastSeen: now,
			IdleTimeout: time.Hour, AbsoluteExpiry: now.Add(2 * time.Hour), AccessToken: "at-0"})
		if err != nil {
			t.Fatal(err)
		}
		return h
	}
	get := func(h string) (*session.Session, error) {
		t.Helper()
		for range 2 { // a read from the file, then a remembered one
			if _, err := st.Get(ctx, h); err != nil {
				return nil, err
			}
		}
		return st.Get(ctx, h)
	}
	h := mk("sid-1", "sub-1")
	if s, err := get(h); err != nil || s.AccessToken != "at-0" {
		t.Fatalf("Get = %v, %v", s, err)
	}
	if _, err := st.Update(ctx, h, func(s *session.Session) error { s.AccessToken = "at-1"; return nil }); err != nil {
		t.Fatal(err)
	}
	if s, err := get(h); err != nil || s.AccessToken != "at-1" {
		t.Fatalf("Get after Update = %+v, %v; want at-1", s, err)
	}
	if err := st.Delete(ctx, h); err != nil {
		t.Fatal(err)
	}
	if _, err := st.Get(ctx, h); !errors.Is(err, session.ErrNotFound) {
		t.Fatalf("Get after Delete = %v, want ErrNotFound", err)
	}
	h2, h3 := mk("sid-2", "sub-2"), mk("sid-3", "sub-3")
	_, _ = get(h2)
	_, _ = get(h3)
	if n, err := st.EndBySID(ctx, "sid-2"); err != nil || n != 1 {
		t.Fatalf("EndBySID = %d, %v", n, err)
	}
	if _, err := st.Get(ctx, h2); !errors.Is(err, session.ErrNotFound) {
		t.Fatalf("Get after EndBySID = %v, want ErrNotFound", err)
	}
	if n, err := st.EndBySubject(ctx, "sub-3"); err != nil || n != 1 {
		t.Fatalf("EndBySubject = %d, %v", n, err)
	}
	if _, err := st.Get(ctx, h3); !errors.Is(err, session.ErrNotFound) {
		t.Fatalf("Get after EndBySubject = %v, want ErrNotFound", err)
	}
	h4 := mk("sid-4", "sub-4")
	_, _ = get(h4)
	now = now.Add(3 * time.Hour)
	if n, err := st.Sweep(now); err != nil || n != 1 {
		t.Fatalf("Sweep = %d, %v", n, err)
	}
	now = now.Add(-3 * time.Hour) // back before the expiry: only the sweep can make it gone
	if _, err := st.Get(ctx, h4); !errors.Is(err, session.ErrNotFound) {
		t.Fatalf("Get after Sweep = %v, want ErrNotFound", err)
	}
}

// Readers racing writers never see a version older than the last
// Update that had returned before their Get began.
func TestRecordCacheRace(t *testing.T) {
	ctx := context.Background()
	st, _, _ := newStore(t, nil)
	now := time.Now()
	h, err := st.Create(ctx, &session.Session{Subject: "s", Created: now, LastSeen: now, IdleTimeout: time.Hour, AbsoluteExpiry: now.Add(time.Hour)})
	if err != nil {
		t.Fatal(err)
	}
	var floor atomic.Int64 // the version of the last Update that returned
	var stop atomic.Bool
	var wg sync.WaitGroup
	for range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for !stop.Load() {
				min := floor.Load()
				s, err := st.Get(ctx, h)
				if err != nil {
					t.Error(err)
					return
				}
				if int64(s.Version) < min {
					t.Errorf("Get returned version %d after Update to %d had returned", s.Version, min)
					return
				}
			}
		}()
	}
	for range 200 {
		var v int64
		if _, err := st.Update(ctx, h, func(s *session.Session) error { v = int64(s.Version) + 1; return nil }); err != nil {
			t.Fatal(err)
		}
		floor.Store(v)
	}
	stop.Store(true)
	wg.Wait()
}

// An Update that leaves the session expired removes it for good: Get
// agrees with what Update reported.
func TestUpdateThatExpiresRemoves(t *testing.T) {
	ctx := context.Background()
	now := time.Unix(1_800_000_000, 0)
	st, _, _ := newStore(t, func() time.Time { return now })
	h, err := st.Create(ctx, &session.Session{Subject: "s", SID: "sid", Created: now, LastSeen: now, IdleTimeout: time.Hour, AbsoluteExpiry: now.Add(time.Hour)})
	if err != nil {
		t.Fatal(err)
	}
	_, err = st.Update(ctx, h, func(s *session.Session) error { s.AbsoluteExpiry = now.Add(-time.Second); return nil })
	if !errors.Is(err, session.ErrNotFound) {
		t.Fatalf("Update that expires the session = %v, want ErrNotFound", err)
	}
	if _, err := st.Get(ctx, h); !errors.Is(err, session.ErrNotFound) {
		t.Fatalf("Get after that Update = %v, want ErrNotFound (the record must be gone)", err)
	}
	if n, err := st.EndBySID(ctx, "sid"); err != nil || n != 0 {
		t.Fatalf("EndBySID after removal = %d, %v; want 0: the index entry must be gone too", n, err)
	}
}
