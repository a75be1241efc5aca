//go:build linux

package boltfault_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	bbolt "go.etcd.io/bbolt"

	"github.com/bffgate/bffgate/internal/boltfault"
	"github.com/bffgate/bffgate/internal/fulldisk"
)

// On a real full disk (a tmpfs filled to the last byte) new records fail
// with an error Is recognises, the probe reports the file unwritable, and
// both recover once space is freed, without reopening the file.
func TestFullDisk(t *testing.T) {
	dir := fulldisk.Mount(t, 4<<20)
	db, err := bbolt.Open(filepath.Join(dir, "bffgate.db"), 0o600, &bbolt.Options{Timeout: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	val := bytes.Repeat([]byte("v"), 3000)
	put := func(key string) error {
		return db.Update(func(tx *bbolt.Tx) error {
			b, err := tx.CreateBucketIfNotExists([]byte("b"))
			if err != nil {
				return err
			}
			return b.Put([]byte(key), val)
		})
	}
	for i := range 20 {
		if err := put(fmt.Sprint("before", i)); err != nil {
			t.Fatal(err)
		}
	}
	now := time.Unix(1_700_000_000, 0)
	probe := boltfault.NewProbe(db, "health", func() time.Time { return now })
	if err := probe.Check(context.Background()); err != nil {
		t.Fatalf("probe with free space: %v", err)
	}

	filler := fulldisk.Fill(t, dir)
	var failed error
	for i := range 50 {
		if err := put(fmt.Sprint("full", i)); err != nil {
			failed = err
			break
		}
	}
	if failed == nil {
		t.Fatal("50 new records written on a full disk: the disk is not full")
	}
	if !errors.Is(failed, syscall.ENOSPC) || !boltfault.Is(failed) {
		t.Errorf("write on a full disk: %v (Is %t), want ENOSPC recognised as a fault", failed, boltfault.Is(failed))
	}
	if err := probe.Check(context.Background()); err != nil {
		t.Errorf("probe within a second of a good one: %v, want its cached answer", err)
	}
	now = now.Add(boltfault.ProbeInterval)
	if err := probe.Check(context.Background()); err == nil {
		t.Error("probe on a full disk: nil, want an error")
	}

	filler.Free(t)
	if err := put("after"); err != nil {
		t.Errorf("write after space was freed: %v", err)
	}
	now = now.Add(boltfault.ProbeInterval)
	if err := probe.Check(context.Background()); err != nil {
		t.Errorf("probe after space was freed: %v", err)
	}
}
