//go:build linux

package bolt

import (
	"context"
	"errors"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/bffgate/bffgate/internal/fulldisk"
	"github.com/bffgate/bffgate/session"
)

// A full disk (a tmpfs filled to the last byte) makes writes fail with an
// error matching session.ErrUnavailable (the gateway answers 503 and keeps
// the session, never 502 or 500), and Ping fail while the file cannot be
// written; both recover once space is freed.
func TestFullDiskIsUnavailable(t *testing.T) {
	dir := fulldisk.Mount(t, 4<<20)
	db := openDB(t, filepath.Join(dir, "bffgate.db"))
	defer db.Close()
	st, err := New(db, Config{Registerer: prometheus.NewRegistry()})
	if err != nil {
		t.Fatal(err)
	}
	ended := NewEnded(db)
	ctx := context.Background()
	now := time.Now()
	newSession := func() *session.Session {
		return &session.Session{Subject: "u", SID: "s", AccessToken: strings.Repeat("a", 1500), RefreshToken: strings.Repeat("r", 800),
			Created: now, LastSeen: now, IdleTimeout: time.Hour, AbsoluteExpiry: now.Add(time.Hour)}
	}
	for _, p := range []func(context.Context) error{st.Ping, ended.Ping} {
		if err := p(ctx); err != nil {
			t.Fatalf("Ping with free space: %v", err)
		}
	}

	filler := fulldisk.Fill(t, dir)
	var failed error
	for range 100 {
		if _, err := st.Create(ctx, newSession()); err != nil {
			failed = err
			break
		}
	}
	if failed == nil {
		t.Fatal("100 sessions stored on a full disk: the disk is not full")
	}
	if !errors.Is(failed, session.ErrUnavailable) || !errors.Is(failed, syscall.ENOSPC) {
		t.Errorf("Create on a full disk: %v; want it to match session.ErrUnavailable (and ENOSPC)", failed)
	}
	// The operator reads which file: the gateway logs this error.
	if !strings.Contains(failed.Error(), filepath.Join(dir, "bffgate.db")) {
		t.Errorf("Create on a full disk: %v; want the data file named", failed)
	}
	for name, p := range map[string]func(context.Context) error{"Store": st.Ping, "Ended": ended.Ping} {
		waitPing(t, name, p, false)
	}

	filler.Free(t)
	for name, p := range map[string]func(context.Context) error{"Store": st.Ping, "Ended": ended.Ping} {
		waitPing(t, name, p, true)
	}
	if _, err := st.Create(ctx, newSession()); err != nil {
		t.Errorf("Create after space was freed: %v", err)
	}
}

// waitPing waits out Ping's cached answer (a second) for the one wanted.
func waitPing(t *testing.T, name string, ping func(context.Context) error, ok bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		err := ping(context.Background())
		if (err == nil) == ok {
			if err != nil && !errors.Is(err, session.ErrUnavailable) {
				t.Errorf("%s.Ping on a full disk: %v, want it to match session.ErrUnavailable", name, err)
			}
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s.Ping: %v after 10 s, want ok=%t", name, err, ok)
		}
		time.Sleep(50 * time.Millisecond)
	}
}
