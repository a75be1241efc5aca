package bolt

import (
	"context"
	"errors"
	"path/filepath"
	"testing"
	"time"

	"github.com/bffgate/bffgate/session"
	"github.com/bffgate/bffgate/session/sessiontest"
)

// TestNamespaceContract: a named namespace is a store like the classic
// one.
func TestNamespaceContract(t *testing.T) {
	sessiontest.RunStoreTests(t, func(t *testing.T, now func() time.Time) session.Store {
		db := openDB(t, filepath.Join(t.TempDir(), "bffgate.db"))
		t.Cleanup(func() { db.Close() })
		st, err := New(db, Config{Now: now, Namespace: "admin"})
		if err != nil {
			t.Fatal(err)
		}
		return st
	})
}

// TestNamespaces: two frontends' stores in one file share nothing: a
// ticket of one names nothing in the other, ending by sid or subject
// stays in its namespace, and Purge removes one namespace's sessions
// (its ended records stay).
func TestNamespaces(t *testing.T) {
	ctx := context.Background()
	db := openDB(t, filepath.Join(t.TempDir(), "bffgate.db"))
	defer db.Close()
	now := sessiontest.Start()
	clock := func() time.Time { return now }
	stores := map[string]*Store{}
	handles := map[string]string{}
	for _, ns := range []string{"", "shop", "admin"} {
		st, err := New(db, Config{Now: clock, Namespace: ns})
		if err != nil {
			t.Fatal(err)
		}
		stores[ns] = st
		// The same sid and subject in every namespace, as two clients
		// of one provider session have.
		s := sessiontest.Sample(now, 1)
		if handles[ns], err = st.Create(ctx, s); err != nil {
			t.Fatal(err)
		}
	}
	for ns, st := range stores {
		for other, h := range handles {
			_, err := st.Get(ctx, h)
			if ns == other && err != nil {
				t.Fatalf("%q: own session: %v", ns, err)
			}
			if ns != other && !errors.Is(err, session.ErrNotFound) {
				t.Fatalf("%q opened %q's ticket: %v", ns, other, err)
			}
		}
	}
	if n, err := stores["shop"].EndBySID(ctx, "sid-1"); n != 1 || err != nil {
		t.Fatalf("EndBySID in shop: %d, %v", n, err)
	}
	if n, err := stores["shop"].EndBySubject(ctx, "user-1"); n != 0 || err != nil {
		t.Fatalf("EndBySubject in shop after: %d, %v", n, err)
	}
	for _, ns := range []string{"", "admin"} {
		if _, err := stores[ns].Get(ctx, handles[ns]); err != nil {
			t.Fatalf("%q lost its session to shop's logout: %v", ns, err)
		}
	}
	if _, err := Purge(db, ""); err == nil {
		t.Fatal("the classic namespace was purged")
	}
	// A logout of admin's cookie sessions, recorded before the purge.
	if err := NewEndedIn(db, "admin").EndSID(ctx, "sid-out", now.Add(time.Hour)); err != nil {
		t.Fatal(err)
	}
	if n, err := Purge(db, "admin"); n != 1 || err != nil {
		t.Fatalf("Purge admin: %d, %v", n, err)
	}
	if _, err := stores[""].Get(ctx, handles[""]); err != nil {
		t.Fatalf("the classic session went with admin's: %v", err)
	}
	// A store of the purged namespace opened again starts empty.
	st, err := New(db, Config{Now: clock, Namespace: "admin"})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := st.Get(ctx, handles["admin"]); !errors.Is(err, session.ErrNotFound) {
		t.Fatalf("purged session: %v", err)
	}
	// Its ended records stay: a cookie logged out of stays refused by a
	// frontend of that name added again.
	if ended, err := NewEndedIn(db, "admin").Ended(ctx, "sid-out", "", now); !ended || err != nil {
		t.Fatalf("admin's ended sid after the purge: %v, %v", ended, err)
	}
	// Ended records are per namespace too.
	a, b := NewEndedIn(db, "shop"), NewEndedIn(db, "admin")
	if err := a.EndSID(ctx, "sid-x", now.Add(time.Hour)); err != nil {
		t.Fatal(err)
	}
	if ended, _ := a.Ended(ctx, "sid-x", "", now); !ended {
		t.Fatal("shop's ended sid not seen")
	}
	if ended, _ := b.Ended(ctx, "sid-x", "", now); ended {
		t.Fatal("shop's ended sid reached admin")
	}
}
