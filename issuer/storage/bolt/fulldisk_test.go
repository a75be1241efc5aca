//go:build linux

package bolt

import (
	"context"
	"errors"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"github.com/bffgate/bffgate/internal/datafile"
	"github.com/bffgate/bffgate/internal/fulldisk"
	"github.com/bffgate/bffgate/issuer/storage"
)

// A full disk (a tmpfs filled to the last byte) is a fault of the store,
// not of the request: every failing write matches storage.ErrUnavailable
// (the issuer answers 503 temporarily_unavailable, not 500 server_error),
// Ping fails while the file cannot be written, and both recover once space
// is freed, without reopening the file.
func TestFullDiskIsUnavailable(t *testing.T) {
	dir := fulldisk.Mount(t, 4<<20)
	db, err := datafile.Open(filepath.Join(dir, "bffgate.db"), time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	s, err := New(db, Config{})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	now := time.Now()
	code := func(i int) storage.AuthCode {
		return storage.AuthCode{Hash: "code-" + time.Duration(i).String(), ClientID: "c", RedirectURI: "https://c.test/cb",
			Scope: "openid", Subject: "u", ExpiresAt: now.Add(time.Minute), Claims: make([]byte, 2000)}
	}
	if err := s.Ping(ctx); err != nil {
		t.Fatalf("Ping with free space: %v", err)
	}

	filler := fulldisk.Fill(t, dir)
	var failed error
	for i := range 100 {
		if err := s.CreateCode(ctx, code(i)); err != nil {
			failed = err
			break
		}
	}
	if failed == nil {
		t.Fatal("100 codes stored on a full disk: the disk is not full")
	}
	if !errors.Is(failed, storage.ErrUnavailable) || !errors.Is(failed, syscall.ENOSPC) {
		t.Errorf("CreateCode on a full disk: %v; want it to match storage.ErrUnavailable (and ENOSPC)", failed)
	}
	waitPing(t, s, false)

	filler.Free(t)
	waitPing(t, s, true)
	if err := s.CreateCode(ctx, code(1000)); err != nil {
		t.Errorf("CreateCode after space was freed: %v", err)
	}
}

// waitPing waits out Ping's cached answer (a second) for the one wanted.
func waitPing(t *testing.T, s *Store, ok bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		err := s.Ping(context.Background())
		if (err == nil) == ok {
			if err != nil && !errors.Is(err, storage.ErrUnavailable) {
				t.Errorf("Ping on a full disk: %v, want it to match storage.ErrUnavailable", err)
			}
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("Ping: %v after 10 s, want ok=%t", err, ok)
		}
		time.Sleep(50 * time.Millisecond)
	}
}
