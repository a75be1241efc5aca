package redis

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	goredis "github.com/redis/go-redis/v9"

	"github.com/bffgate/bffgate/internal/redistest"
	"github.com/bffgate/bffgate/issuer/storage"
)

// TestConflictBounded: an Update whose reads another client keeps changing
// is tried MaxRetries times, then fails with ErrConflict (which matches
// storage.ErrUnavailable), and none of its writes is applied.
func TestConflictBounded(t *testing.T) {
	t.Parallel()
	c := redistest.Client(t)
	other := redistest.Client(t)
	prefix := redistest.Prefix(t, c, "")
	reg := prometheus.NewRegistry()
	e, err := NewEngine(c, Config{Prefix: prefix, MaxRetries: 3, Registerer: reg})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	runs := 0
	err = e.Update(ctx, func(tx storage.Tx) error {
		runs++
		if _, err := tx.Get(storage.BucketGrants, "g"); err != nil {
			return err
		}
		if err := tx.Put(storage.BucketCodes, "c", []byte("mine")); err != nil {
			return err
		}
		if err := tx.AddMember(storage.IndexSIDGrants, "sid", "g"); err != nil {
			return err
		}
		// Another writer changes what this transaction read.
		return other.Set(ctx, e.k.grant("g"), fmt.Sprint("theirs-", runs), 0).Err()
	})
	if !errors.Is(err, ErrConflict) || !errors.Is(err, storage.ErrUnavailable) {
		t.Fatalf("Update under constant conflict = %v; want ErrConflict matching ErrUnavailable", err)
	}
	if runs != 3 {
		t.Errorf("fn ran %d times; want MaxRetries = 3", runs)
	}
	if r, g := counter(t, e.retries), counter(t, e.conflicts); r != 2 || g != 1 {
		t.Errorf("metrics: %v retries, %v conflicts; want 2 and 1", r, g)
	}
	if n, err := c.Exists(ctx, e.k.code("c"), e.k.sidGrants("sid")).Result(); err != nil || n != 0 {
		t.Errorf("after the failed Update %d of its keys exist (%v); want none", n, err)
	}
	if v, _ := c.Get(ctx, e.k.grant("g")).Result(); v != "theirs-3" {
		t.Errorf("the other writer's value = %q; want theirs-3", v)
	}
}

func counter(t *testing.T, c prometheus.Counter) float64 {
	t.Helper()
	var d dto.Metric
	if err := c.Write(&d); err != nil {
		t.Fatal(err)
	}
	return d.GetCounter().GetValue()
}

// TestConcurrentRotateRevoke races many rotations and revocations of a few
// grants across two clients (two issuer instances), with no retry so
// that some transactions give up. Each refresh token is rotated at most
// once, every failure is a contract error or ErrConflict, and the stored
// state is whole: no rule was half applied.
func TestConcurrentRotateRevoke(t *testing.T) {
	t.Parallel()
	c1, c2 := redistest.Client(t), redistest.Client(t)
	prefix := redistest.Prefix(t, c1, "")
	var stores []*Store
	for _, c := range []goredis.UniversalClient{c1, c2} {
		s, err := New(c, Config{Prefix: prefix, MaxRetries: 1})
		if err != nil {
			t.Fatal(err)
		}
		stores = append(stores, s)
	}
	ctx := context.Background()
	now := time.Now().Truncate(time.Millisecond).UTC()
	exp := now.Add(time.Hour)
	const grants, workers, rounds = 4, 16, 40
	cur := make([]atomic.Pointer[string], grants)
	for i := range grants {
		g := fmt.Sprintf("g%d", i)
		sid := fmt.Sprintf("sid%d", i%2)
		code := storage.AuthCode{Hash: "code-" + g, ClientID: "c", SID: sid, ExpiresAt: exp}
		if err := stores[0].CreateCode(ctx, code); err != nil {
			t.Fatal(err)
		}
		jti := g + "-r0"
		if _, err := stores[0].RedeemCode(ctx, code.Hash, now, func(storage.AuthCode) (storage.Issued, error) {
			return storage.Issued{
				Grant:   &storage.Grant{ID: g, ClientID: "c", SID: sid, ExpiresAt: exp},
				Refresh: &storage.RefreshToken{JTI: jti, GrantID: g, ClientID: "c", SID: sid, ExpiresAt: exp},
			}, nil
		}); err != nil {
			t.Fatal(err)
		}
		cur[i].Store(&jti)
	}

	var (
		rotatedFrom sync.Map // old jti -> the worker that rotated it
		conflicts   atomic.Int64
		wg          sync.WaitGroup
		errs        = make(chan error, workers*rounds)
	)
	for w := range workers {
		wg.Go(func() {
			s := stores[w%2]
			for r := range rounds {
				i := (w + r) % grants
				g := fmt.Sprintf("g%d", i)
				var err error
				switch {
				case w == 0 && r == rounds/2:
					err = s.RevokeGrant(ctx, g, exp, now)
				case w == 1 && r == rounds/2:
					err = s.RevokeAccessToken(ctx, fmt.Sprintf("at-%d", r), g, exp, now)
				case w == 2 && r == rounds-1:
					_, err = s.RevokeSID(ctx, "sid1", exp, now)
				default:
					old := *cur[i].Load()
					next := fmt.Sprintf("%s-w%d-r%d", g, w, r)
					err = s.RotateRefresh(ctx, old, true, now, func(rt storage.RefreshToken) (storage.Issued, error) {
						n := rt
						n.JTI = next
						gr := storage.Grant{ID: rt.GrantID, ClientID: "c", SID: rt.SID, ExpiresAt: exp}
						return storage.Issued{Grant: &gr, Refresh: &n}, nil
					})
					if err == nil {
						if prev, dup := rotatedFrom.LoadOrStore(old, w); dup {
							errs <- fmt.Errorf("refresh token %s rotated twice (workers %v and %d)", old, prev, w)
						}
						cur[i].Store(&next)
					}
				}
				switch {
				case err == nil, errors.Is(err, storage.ErrNotFound):
				case errors.Is(err, ErrConflict) && errors.Is(err, storage.ErrUnavailable):
					conflicts.Add(1)
				default:
					errs <- err
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	t.Logf("%d transactions gave up after one try", conflicts.Load())
	checkWhole(t, c1, stores[0])
}

// checkWhole checks that the stored state satisfies every rule's
// invariants: each allowlisted refresh token names a stored, undenied
// grant and is in its grant's set and the expiry index; each set member is
// a stored record; each denylisted grant has no refresh token left and no
// record; each denylist entry is in the change log and the expiry index.
func checkWhole(t *testing.T, c goredis.UniversalClient, s *Store) {
	t.Helper()
	ctx := context.Background()
	keys, err := dump(ctx, c, s.cfg.Prefix)
	if err != nil {
		t.Fatal(err)
	}
	byKey := map[string]dumpedKey{}
	for _, d := range keys {
		byKey[d.Key] = d
	}
	zmember := func(zkey, m string) bool {
		for _, z := range byKey[zkey].ZSet {
			if z.Member == m {
				return true
			}
		}
		return false
	}
	const base = "{issuer}:"
	inSet := func(key, m string) bool {
		for _, x := range byKey[key].Set {
			if x == m {
				return true
			}
		}
		return false
	}
	logged := map[string]bool{}
	for _, z := range byKey[base+"denylog"].ZSet {
		_, e, err := decodeLogMember(z.Member.(string))
		if err != nil {
			t.Errorf("change log member %v: %v", z.Member, err)
			continue
		}
		logged[string(e.Kind)+":"+e.ID] = true
	}
	for _, d := range keys {
		name := strings.TrimPrefix(d.Key, base)
		switch {
		case strings.HasPrefix(name, "refresh:"):
			var rt storage.RefreshToken
			if err := json.Unmarshal([]byte(*d.String), &rt); err != nil {
				t.Fatal(err)
			}
			if _, ok := byKey[base+"grant:"+rt.GrantID]; !ok {
				t.Errorf("refresh token %s names grant %s, which is not stored", rt.JTI, rt.GrantID)
			}
			if _, ok := byKey[base+"deny:grant:"+rt.GrantID]; ok {
				t.Errorf("refresh token %s is allowlisted, its grant %s denylisted", rt.JTI, rt.GrantID)
			}
			if !inSet(base+"grant-refresh:"+rt.GrantID, rt.JTI) {
				t.Errorf("refresh token %s is missing from its grant's set", rt.JTI)
			}
			if !zmember(base+"expiry", "r"+rt.JTI) {
				t.Errorf("refresh token %s is missing from the expiry index", rt.JTI)
			}
		case strings.HasPrefix(name, "grant-refresh:"):
			for _, m := range d.Set {
				if _, ok := byKey[base+"refresh:"+m]; !ok {
					t.Errorf("%s names refresh token %s, which is not stored", name, m)
				}
			}
		case strings.HasPrefix(name, "sid-grants:"):
			for _, m := range d.Set {
				if _, ok := byKey[base+"grant:"+m]; !ok {
					t.Errorf("%s names grant %s, which is not stored", name, m)
				}
			}
		case strings.HasPrefix(name, "grant:"):
			id := strings.TrimPrefix(name, "grant:")
			if _, ok := byKey[base+"deny:grant:"+id]; ok {
				t.Errorf("grant %s is stored and denylisted", id)
			}
			if !zmember(base+"expiry", "g"+id) {
				t.Errorf("grant %s is missing from the expiry index", id)
			}
		case strings.HasPrefix(name, "deny:"):
			id := strings.TrimPrefix(name, "deny:")
			if !logged[id] {
				t.Errorf("denylist entry %s is not in the change log", id)
			}
			if !zmember(base+"expiry", "d"+id) {
				t.Errorf("denylist entry %s is missing from the expiry index", id)
			}
		}
	}
}

// TestDueWatchesRecords: the expiry index is read without a watch, but
// the records Due lists are watched, so a purge whose record another
// instance changed meanwhile runs again and no longer finds it due.
func TestDueWatchesRecords(t *testing.T) {
	t.Parallel()
	c := redistest.Client(t)
	prefix := redistest.Prefix(t, c, "")
	e, err := NewEngine(c, Config{Prefix: prefix})
	if err != nil {
		t.Fatal(err)
	}
	other, err := New(redistest.Client(t), Config{Prefix: prefix})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	now := time.Now().Truncate(time.Millisecond).UTC()
	soon := now.Add(time.Minute)
	if err := other.CreateCode(ctx, storage.AuthCode{Hash: "h", ClientID: "c", ExpiresAt: soon}); err != nil {
		t.Fatal(err)
	}
	var seen [][]storage.Due
	err = e.Update(ctx, func(tx storage.Tx) error {
		due, err := tx.Due(soon.Add(time.Second), 0)
		if err != nil {
			return err
		}
		seen = append(seen, due)
		if len(seen) == 1 {
			// Another instance redeems the code meanwhile (a write of
			// its record) and revokes what it minted.
			if _, err := other.RedeemCode(ctx, "h", now, func(storage.AuthCode) (storage.Issued, error) {
				return storage.Issued{Grant: &storage.Grant{ID: "g", ExpiresAt: soon.Add(time.Hour)}}, nil
			}); err != nil {
				return err
			}
		}
		for _, d := range due {
			if d.Kind == storage.ExpireCode {
				if err := tx.Delete(storage.BucketCodes, d.ID); err != nil {
					return err
				}
				if err := tx.Unexpire(d.Kind, d.ID, d.At); err != nil {
					return err
				}
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if len(seen) != 2 {
		t.Fatalf("the purge ran %d times; want 2 (its first commit met the other instance's write)", len(seen))
	}
	if len(seen[0]) != 1 || seen[0][0].Kind != storage.ExpireCode || seen[0][0].ID != "h" || !seen[0][0].At.Equal(soon) {
		t.Errorf("first Due = %+v; want the code at %v", seen[0], soon)
	}
	// The code was rewritten (redeemed) with the same expiry: still due,
	// and now deleted on a state that includes the redemption.
	if _, err := other.RedeemCode(ctx, "h", now, nil); !errors.Is(err, storage.ErrNotFound) {
		t.Errorf("RedeemCode after the purge = %v; want ErrNotFound", err)
	}
	// Not early: an entry is due only once its millisecond has passed.
	if err := other.CreateCode(ctx, storage.AuthCode{Hash: "h2", ClientID: "c", ExpiresAt: soon}); err != nil {
		t.Fatal(err)
	}
	_ = e.View(ctx, func(tx storage.Tx) error {
		for _, at := range []time.Time{soon.Add(-time.Millisecond), soon, soon.Add(time.Millisecond - 1)} {
			if d, err := tx.Due(at, 0); err != nil || len(d) != 0 {
				t.Errorf("Due(%v) with an entry at %v = %+v, %v; want nothing yet", at, soon, d, err)
			}
		}
		if d, err := tx.Due(soon.Add(time.Millisecond), 0); err != nil || len(d) != 1 {
			t.Errorf("Due a millisecond after = %+v, %v; want the entry", d, err)
		}
		return nil
	})
}
