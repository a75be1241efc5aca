package adminsock

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/bffgate/bffgate/issuer"
	"github.com/bffgate/bffgate/issuer/storage"
)

// states is the socket's counterpart in these tests, keeping the states
// in a map; the real issuer behind the socket runs in e2e/agents
// (TestAgentsDisableLive).
type states struct {
	mu  sync.Mutex
	m   map[string]storage.ClientState
	via []string
}

func (s *states) SetClientState(_ context.Context, id string, disabled bool, via string) (storage.ClientState, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if id != "agent" {
		return storage.ClientState{}, fmt.Errorf("%w %q", issuer.ErrUnknownClient, id)
	}
	now := time.Now().UTC()
	st := s.m[id]
	st.Disabled, st.Changed = disabled, now
	if disabled {
		st.NotBefore = now
	}
	s.m[id] = st
	s.via = append(s.via, via)
	return st, nil
}

func quiet() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

// shortDir is a data directory whose socket path fits sun_path.
func shortDir(t *testing.T) string {
	t.Helper()
	dir, err := os.MkdirTemp("", "as")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	return dir
}

func start(t *testing.T, dir string, a Agents) *Server {
	t.Helper()
	s, err := Listen(dir, a, quiet())
	if err != nil {
		t.Fatal(err)
	}
	go s.Serve()
	t.Cleanup(func() { s.Close(context.Background()) })
	return s
}

func TestSetClientState(t *testing.T) {
	dir := shortDir(t)
	a := &states{m: map[string]storage.ClientState{}}
	s := start(t, dir, a)
	fi, err := os.Lstat(s.Path())
	if err != nil || fi.Mode().Type() != os.ModeSocket || fi.Mode().Perm() != 0o600 {
		t.Fatalf("socket %v %v, want a socket with mode 0600", fi.Mode(), err)
	}
	ctx := context.Background()
	st, err := SetClientState(ctx, dir, "agent", true)
	if err != nil || !st.Disabled || st.NotBefore.IsZero() {
		t.Fatalf("disable: %+v %v", st, err)
	}
	st, err = SetClientState(ctx, dir, "agent", false)
	if err != nil || st.Disabled || st.NotBefore.IsZero() {
		t.Fatalf("enable: %+v %v", st, err)
	}
	if strings.Join(a.via, ",") != "bffgate agents disable (admin socket),bffgate agents enable (admin socket)" {
		t.Fatalf("the operations named %q", a.via)
	}
	var re *RefusedError
	if _, err := SetClientState(ctx, dir, "other", true); !errors.As(err, &re) || !re.NotFound() || !strings.Contains(err.Error(), `"other"`) {
		t.Fatalf("unknown client: %v", err)
	}
	if err := s.Close(ctx); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Lstat(s.Path()); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("socket left after Close: %v", err)
	}
	if _, err := SetClientState(ctx, dir, "agent", true); !errors.Is(err, ErrNotRunning) {
		t.Fatalf("with the server closed: %v, want ErrNotRunning", err)
	}
}

// TestStaleSocket: a socket file nobody listens on (a killed bffgate)
// reads as nothing running, and Listen replaces it; a file that is no
// socket is left alone.
func TestStaleSocket(t *testing.T) {
	dir := shortDir(t)
	ln, err := net.Listen("unix", Path(dir))
	if err != nil {
		t.Fatal(err)
	}
	ln.(*net.UnixListener).SetUnlinkOnClose(false)
	ln.Close()
	if _, err := os.Lstat(Path(dir)); err != nil {
		t.Fatal(err)
	}
	if _, err := SetClientState(context.Background(), dir, "agent", true); !errors.Is(err, ErrNotRunning) {
		t.Fatalf("stale socket: %v, want ErrNotRunning", err)
	}
	start(t, dir, &states{m: map[string]storage.ClientState{}})
	if _, err := SetClientState(context.Background(), dir, "agent", true); err != nil {
		t.Fatalf("after replacing the stale socket: %v", err)
	}

	other := shortDir(t)
	os.WriteFile(Path(other), []byte("mine"), 0o600)
	if _, err := Listen(other, &states{}, quiet()); err == nil || !strings.Contains(err.Error(), "not a socket") {
		t.Fatalf("a regular file in the way: %v", err)
	}
	if b, _ := os.ReadFile(Path(other)); string(b) != "mine" {
		t.Fatal("Listen touched a file that is no socket")
	}
}

func TestPathTooLong(t *testing.T) {
	dir := filepath.Join(t.TempDir(), strings.Repeat("d", 120))
	if _, err := Listen(dir, &states{}, quiet()); !errors.Is(err, ErrPathTooLong) {
		t.Fatalf("Listen: %v, want ErrPathTooLong", err)
	}
	if _, err := SetClientState(context.Background(), dir, "agent", true); !errors.Is(err, ErrNotRunning) {
		t.Fatalf("SetClientState: %v, want ErrNotRunning", err)
	}
}

// TestOtherUser: another user gets nowhere: the socket's mode keeps it
// out, and with the mode opened up by hand, SO_PEERCRED does. Needs root
// to run the client as nobody.
func TestOtherUser(t *testing.T) {
	if dir := os.Getenv("ADMINSOCK_CHILD_DIR"); dir != "" {
		_, err := SetClientState(context.Background(), dir, "agent", true)
		fmt.Print(err)
		os.Exit(0)
	}
	if os.Getuid() != 0 {
		t.Skip("needs root to run a client as another user")
	}
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	dir := shortDir(t)
	os.Chmod(dir, 0o755)
	bin := filepath.Join(dir, "child.test")
	raw, err := os.ReadFile(exe)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(bin, raw, 0o755); err != nil {
		t.Fatal(err)
	}
	a := &states{m: map[string]storage.ClientState{}}
	s := start(t, dir, a)
	asNobody := func() string {
		cmd := exec.Command(bin, "-test.run=^TestOtherUser$")
		cmd.Env = []string{"ADMINSOCK_CHILD_DIR=" + dir}
		cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: 65534, Gid: 65534}}
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("child: %v\n%s", err, out)
		}
		return string(out)
	}
	if out := asNobody(); !strings.Contains(out, "not yours") {
		t.Fatalf("another user on the 0600 socket: %q", out)
	}
	os.Chmod(s.Path(), 0o666)
	if out := asNobody(); !strings.Contains(out, "uid 65534 may not use") {
		t.Fatalf("another user on an opened-up socket: %q", out)
	}
	if len(a.via) != 0 {
		t.Fatalf("another user changed a state: %q", a.via)
	}
}
