package redis

import (
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"testing"
	"time"

	goredis "github.com/redis/go-redis/v9"

	"github.com/bffgate/bffgate/internal/redistest"
	"github.com/bffgate/bffgate/session"
)

// fixture is testdata/release1.json: the keys a session store of the
// release before the shared ticket rules wrote (testdata/mkfixture at
// commit 82e5328), and the handles of its sessions.
type fixture struct {
	Handles map[string]string `json:"handles"`
	Keys    []struct {
		Name       string             `json:"name"`
		Type       string             `json:"type"`
		Value      []byte             `json:"value"`
		Members    map[string]float64 `json:"members"`
		ExpireAtMS int64              `json:"expire_at_ms"`
	} `json:"keys"`
}

// TestReleaseFixture loads the keys of a Redis database written by the
// previous release under a fresh prefix and checks that its sessions read,
// change and end (through the stored indexes) and that its ended records
// hold: the key names and encodings did not move.
func TestReleaseFixture(t *testing.T) {
	t.Parallel()
	b, err := os.ReadFile(filepath.Join("testdata", "release1.json"))
	if err != nil {
		t.Fatal(err)
	}
	var fx fixture
	if err := json.Unmarshal(b, &fx); err != nil {
		t.Fatal(err)
	}
	c := redistest.Client(t)
	prefix := redistest.Prefix(t, c, "session:")
	ctx := t.Context()
	for _, k := range fx.Keys {
		name := prefix + k.Name
		switch k.Type {
		case "string":
			c.Set(ctx, name, k.Value, 0)
		case "zset":
			for m, s := range k.Members {
				c.ZAdd(ctx, name, goredis.Z{Score: s, Member: m})
			}
		default:
			t.Fatalf("fixture key %s has type %s", k.Name, k.Type)
		}
		if k.ExpireAtMS > 0 {
			c.PExpireAt(ctx, name, time.UnixMilli(k.ExpireAtMS))
		}
	}
	now := time.Date(2026, 12, 7, 14, 0, 0, 0, time.UTC)
	st, err := New(c, Config{Prefix: prefix, Now: func() time.Time { return now }})
	if err != nil {
		t.Fatal(err)
	}
	h := fx.Handles
	for _, name := range []string{"alice1", "alice2", "bob"} {
		s, err := st.Get(ctx, h[name])
		if err != nil {
			t.Fatalf("Get(%s) = %v", name, err)
		}
		if s.AccessToken != "access-token-"+name || s.RefreshToken != "refresh-token-"+name || s.Version != 3 {
			t.Errorf("Get(%s) = %+v; want the fixture's session", name, s)
		}
	}
	if s, err := st.Get(ctx, h["carol"]); err != nil || s.AccessToken != "access-token-carol-2" || s.Version != 4 {
		t.Fatalf("Get(carol) = %+v, %v; want the updated session, version 4", s, err)
	}
	if _, err := st.Update(ctx, h["carol"], func(s *session.Session) error { s.AccessToken = "v3"; return nil }); err != nil {
		t.Fatal(err)
	}
	if s, err := st.Get(ctx, h["carol"]); err != nil || s.AccessToken != "v3" || s.Version != 5 {
		t.Errorf("Get(carol) after Update = %+v, %v", s, err)
	}
	if n, err := st.EndBySubject(ctx, "alice"); err != nil || n != 2 {
		t.Errorf("EndBySubject(alice) = %d, %v; want 2 (through the stored subject index)", n, err)
	}
	if n, err := st.EndBySID(ctx, "sid-b"); err != nil || n != 1 {
		t.Errorf("EndBySID(sid-b) = %d, %v; want 1", n, err)
	}
	if n, err := st.EndBySID(ctx, "sid-c"); err != nil || n != 1 {
		t.Errorf("EndBySID(sid-c) = %d, %v; want 1", n, err)
	}
	for name, handle := range h {
		if _, err := st.Get(ctx, handle); !errors.Is(err, session.ErrNotFound) {
			t.Errorf("Get(%s) after its ending = %v; want ErrNotFound", name, err)
		}
	}
	e := NewEnded(c, prefix+"ended:")
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
