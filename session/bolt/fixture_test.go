package bolt

import (
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/bffgate/bffgate/session"
)

// TestReleaseFixture opens a data file written by the session store of the
// release before the shared ticket rules (testdata/release1.db, made by
// testdata/mkfixture at commit 82e5328, its handles in release1.json) and
// checks that every session and ended record of it reads, changes, ends
// and sweeps: the bucket names and encodings did not move.
func TestReleaseFixture(t *testing.T) {
	t.Parallel()
	src, err := os.ReadFile(filepath.Join("testdata", "release1.db"))
	if err != nil {
		t.Fatal(err)
	}
	var handles map[string]string
	b, err := os.ReadFile(filepath.Join("testdata", "release1.json"))
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(b, &handles); err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), "bffgate.db")
	if err := os.WriteFile(path, src, 0o600); err != nil {
		t.Fatal(err)
	}
	db := openDB(t, path)
	defer db.Close()
	now := time.Date(2026, 12, 7, 14, 0, 0, 0, time.UTC)
	st, err := New(db, Config{Now: func() time.Time { return now }, Registerer: prometheus.NewRegistry()})
	if err != nil {
		t.Fatal(err)
	}
	ctx := t.Context()

	for _, name := range []string{"alice1", "alice2", "bob"} {
		s, err := st.Get(ctx, handles[name])
		if err != nil {
			t.Fatalf("Get(%s) = %v", name, err)
		}
		if s.AccessToken != "access-token-"+name || s.RefreshToken != "refresh-token-"+name || s.Version != 3 ||
			string(s.Claims) != `{"sub":"`+s.Subject+`","name":"Fixture `+name+`"}` {
			t.Errorf("Get(%s) = %+v; want the fixture's session", name, s)
		}
	}
	carol, err := st.Get(ctx, handles["carol"])
	if err != nil || carol.AccessToken != "access-token-carol-2" || carol.Version != 4 {
		t.Fatalf("Get(carol) = %+v, %v; want the updated session, version 4", carol, err)
	}
	if _, err := st.Get(ctx, handles["short"]); !errors.Is(err, session.ErrNotFound) {
		t.Errorf("Get(short) = %v; want ErrNotFound (expired at the test's clock)", err)
	}
	if _, err := st.Update(ctx, handles["carol"], func(s *session.Session) error { s.AccessToken = "v3"; return nil }); err != nil {
		t.Fatal(err)
	}
	if s, err := st.Get(ctx, handles["carol"]); err != nil || s.AccessToken != "v3" || s.Version != 5 {
		t.Errorf("Get(carol) after Update = %+v, %v", s, err)
	}
	if n, err := st.EndBySubject(ctx, "alice"); err != nil || n != 2 {
		t.Errorf("EndBySubject(alice) = %d, %v; want 2 (through the stored subject index)", n, err)
	}
	if n, err := st.EndBySID(ctx, "sid-b"); err != nil || n != 1 {
		t.Errorf("EndBySID(sid-b) = %d, %v; want 1 (through the stored sid index)", n, err)
	}
	if n, err := st.EndBySID(ctx, "sid-c"); err != nil || n != 1 {
		t.Errorf("EndBySID(sid-c) = %d, %v; want 1 (indexed by the update)", n, err)
	}
	for _, name := range []string{"alice1", "alice2", "bob", "carol"} {
		if _, err := st.Get(ctx, handles[name]); !errors.Is(err, session.ErrNotFound) {
			t.Errorf("Get(%s) after its ending = %v; want ErrNotFound", name, err)
		}
	}
	// Only the expired session is left for the sweeper.
	if n, err := st.Sweep(now); err != nil || n != 1 {
		t.Errorf("Sweep = %d, %v; want 1 (the expired session, through the stored expiry index)", n, err)
	}

	e := NewEnded(db)
	created := time.Date(2026, 12, 7, 11, 0, 0, 0, time.UTC)
	if ended, err := e.Ended(ctx, "ended-sid", "", created); err != nil || !ended {
		t.Errorf("Ended(ended-sid) = %v, %v; want true", ended, err)
	}
	if ended, err := e.Ended(ctx, "", "ended-sub", created); err != nil || !ended {
		t.Errorf("Ended(ended-sub, created before) = %v, %v; want true", ended, err)
	}
	if ended, err := e.Ended(ctx, "", "ended-sub", now); err != nil || ended {
		t.Errorf("Ended(ended-sub, created after) = %v, %v; want false", ended, err)
	}
}
