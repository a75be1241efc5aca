package redis

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/bffgate/bffgate/internal/redistest"
	"github.com/bffgate/bffgate/session"
	"github.com/bffgate/bffgate/session/sessiontest"
)

// TestNamespaces: two frontends' stores under their own prefixes share
// nothing, and Purge removes one prefix's keys only (its ended records
// stay).
func TestNamespaces(t *testing.T) {
	ctx := context.Background()
	c := redistest.Client(t)
	base := redistest.Prefix(t, c, "session:")
	now := sessiontest.Start()
	clock := func() time.Time { return now }
	stores := map[string]*Store{}
	handles := map[string]string{}
	for _, ns := range []string{"shop", "admin"} {
		st, err := New(c, Config{Prefix: base + "fe:" + ns + ":", Now: clock})
		if err != nil {
			t.Fatal(err)
		}
		stores[ns] = st
		if handles[ns], err = st.Create(ctx, sessiontest.Sample(now, 1)); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := stores["shop"].Get(ctx, handles["admin"]); !errors.Is(err, session.ErrNotFound) {
		t.Fatalf("shop opened admin's ticket: %v", err)
	}
	if n, err := stores["shop"].EndBySID(ctx, "sid-1"); n != 1 || err != nil {
		t.Fatalf("EndBySID: %d, %v", n, err)
	}
	if _, err := stores["admin"].Get(ctx, handles["admin"]); err != nil {
		t.Fatalf("admin lost its session to shop's logout: %v", err)
	}
	if _, err := Purge(ctx, c, DefaultPrefix); err == nil {
		t.Fatal("the default prefix was purged")
	}
	// A logout of admin's cookie sessions, recorded before the purge.
	endedPrefix := base + "fe:admin:ended:"
	if err := NewEnded(c, endedPrefix).EndSID(ctx, "sid-out", now.Add(time.Hour)); err != nil {
		t.Fatal(err)
	}
	// One session (its record, sid and sub index keys): one counted.
	if n, err := Purge(ctx, c, base+"fe:admin:", endedPrefix); n != 1 || err != nil {
		t.Fatalf("Purge: %d sessions, %v; want 1", n, err)
	}
	// The ended records stay: a cookie logged out of stays refused by a
	// frontend of that name added again.
	if ended, err := NewEnded(c, endedPrefix).Ended(ctx, "sid-out", "", now); !ended || err != nil {
		t.Fatalf("admin's ended sid after the purge: %v, %v", ended, err)
	}
	if _, err := stores["admin"].Get(ctx, handles["admin"]); !errors.Is(err, session.ErrNotFound) {
		t.Fatalf("purged session: %v", err)
	}
	// Purging admin leaves shop's sessions alone.
	h, err := stores["shop"].Create(ctx, sessiontest.Sample(now, 2))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := Purge(ctx, c, base+"fe:admin:"); err != nil {
		t.Fatal(err)
	}
	if _, err := stores["shop"].Get(ctx, h); err != nil {
		t.Fatalf("purging admin took shop's session: %v", err)
	}
}
