package memory_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/bffgate/bffgate/issuer/storage"
	"github.com/bffgate/bffgate/issuer/storage/memory"
	"github.com/bffgate/bffgate/issuer/storage/storagetest"
)

func newStore(t *testing.T) storage.Store {
	s, err := storage.NewRules(memory.New(), storage.RulesConfig{})
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// TestContract runs every rule of the issuer's state on the memory engine.
func TestContract(t *testing.T) {
	storagetest.RunStoreTests(t, newStore)
}

// TestRollback checks that a failed Update leaves nothing of what it
// wrote, records, indexes, expiry entries and change log alike.
func TestRollback(t *testing.T) {
	e := memory.New()
	ctx := context.Background()
	now := time.Now()
	boom := errors.New("boom")
	err := e.Update(ctx, func(tx storage.Tx) error {
		if err := tx.Put(storage.BucketCodes, "c", []byte("x")); err != nil {
			return err
		}
		if err := tx.AddMember(storage.IndexSIDGrants, "s", "g"); err != nil {
			return err
		}
		if err := tx.Expire(storage.ExpireCode, "c", now); err != nil {
			return err
		}
		if err := tx.AppendLog(storage.DenyEntry{Kind: storage.DenyJTI, ID: "j", Until: now}); err != nil {
			return err
		}
		return boom
	})
	if !errors.Is(err, boom) {
		t.Fatalf("Update = %v; want the function's error", err)
	}
	err = e.View(ctx, func(tx storage.Tx) error {
		v, _ := tx.Get(storage.BucketCodes, "c")
		m, _ := tx.Members(storage.IndexSIDGrants, "s")
		d, _ := tx.Due(now, 0)
		l, _ := tx.Log(0, 0)
		if v != nil || len(m) != 0 || len(d) != 0 || len(l) != 0 {
			t.Errorf("after a failed Update: value %q, members %v, due %v, log %v; want nothing", v, m, d, l)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	c, err := appendOne(e, now)
	if err != nil || c != 1 {
		t.Errorf("first cursor after a rolled-back append = %d, %v; want 1", c, err)
	}
}

func appendOne(e *memory.Engine, now time.Time) (storage.Cursor, error) {
	var c storage.Cursor
	err := e.Update(context.Background(), func(tx storage.Tx) error {
		if err := tx.AppendLog(storage.DenyEntry{Kind: storage.DenyJTI, ID: "j", Until: now}); err != nil {
			return err
		}
		l, err := tx.Log(0, 0)
		if err == nil && len(l) > 0 {
			c = l[len(l)-1].Cursor
		}
		return err
	})
	return c, err
}

// TestClosed checks that a closed engine answers ErrUnavailable.
func TestClosed(t *testing.T) {
	s, err := storage.NewRules(memory.New(), storage.RulesConfig{})
	if err != nil {
		t.Fatal(err)
	}
	s.Engine().(*memory.Engine).Close()
	if err := s.Ping(context.Background()); !errors.Is(err, storage.ErrUnavailable) {
		t.Errorf("Ping after Close = %v; want ErrUnavailable", err)
	}
	if _, err := s.RefreshToken(context.Background(), "x"); !errors.Is(err, storage.ErrUnavailable) {
		t.Errorf("RefreshToken after Close = %v; want ErrUnavailable", err)
	}
}
