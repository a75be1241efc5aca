// Package redisserver runs a redis-server of a test's own on a spare
// loopback port, without persistence, for the e2e tests that do to Redis
// what must never be done to the machine's shared one: stop and start it
// again empty, flush it, freeze it with SIGSTOP.
package redisserver

import (
	"context"
	"fmt"
	"os/exec"
	"strconv"
	"syscall"
	"testing"
	"time"

	goredis "github.com/redis/go-redis/v9"

	"github.com/bffgate/bffgate/e2e/stack"
)

// Server is one redis-server process (restartable on the same port).
type Server struct {
	t    testing.TB
	bin  string
	port int
	dir  string // --dir: where SHUTDOWN SAVE writes the snapshot
	cmd  *exec.Cmd
	done chan struct{}
}

// Start runs a redis-server and waits until it answers PING; it is
// stopped when the test ends. Without redis-server installed the test is
// skipped, saying what to install.
func Start(t testing.TB) *Server {
	t.Helper()
	bin, err := exec.LookPath("redis-server")
	if err != nil {
		t.Skip("redis-server is not installed: this test runs a Redis of its own (apt-get install redis-server)")
	}
	r := &Server{t: t, bin: bin, port: stack.FreePort(t), dir: t.TempDir()}
	r.Restart()
	t.Cleanup(r.Stop)
	return r
}

// URL is the server's redis:// URL (database 0).
func (r *Server) URL() string { return fmt.Sprintf("redis://127.0.0.1:%d/0", r.port) }

// Client returns a client of the server that does not retry; the caller
// closes it.
func (r *Server) Client() *goredis.Client {
	return goredis.NewClient(&goredis.Options{Addr: fmt.Sprintf("127.0.0.1:%d", r.port), MaxRetries: -1})
}

// Restart starts the server (again, after Stop or Shutdown) on its port
// and waits until it answers PING.
func (r *Server) Restart() {
	r.t.Helper()
	r.cmd = exec.Command(r.bin, "--port", strconv.Itoa(r.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no", "--dir", r.dir)
	if err := r.cmd.Start(); err != nil {
		r.t.Fatalf("start redis-server: %v", err)
	}
	r.done = make(chan struct{})
	go func() { _ = r.cmd.Wait(); close(r.done) }()
	rdb := r.Client()
	defer rdb.Close()
	deadline := time.Now().Add(10 * time.Second)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		err := rdb.Ping(ctx).Err()
		cancel()
		if err == nil {
			return
		}
		select {
		case <-r.done:
			r.t.Fatalf("redis-server on port %d exited: %v", r.port, r.cmd.ProcessState)
		default:
		}
		if time.Now().After(deadline) {
			r.t.Fatalf("redis-server on port %d did not answer PING: %v", r.port, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// Stop sends SIGTERM and waits for the server to exit (SIGKILL after 10
// s). With no save points configured the data is lost: the next Restart
// is empty.
func (r *Server) Stop() { r.Shutdown(false) }

// Shutdown stops the server; with save, by SHUTDOWN SAVE, which writes a
// snapshot that the next Restart loads (a Redis with persistence).
func (r *Server) Shutdown(save bool) {
	if r.cmd == nil || r.cmd.Process == nil {
		return
	}
	select {
	case <-r.done:
		return
	default:
	}
	_ = r.cmd.Process.Signal(syscall.SIGCONT) // a frozen server cannot exit
	if save {
		rdb := r.Client()
		// The server closes the connection instead of answering.
		_ = rdb.ShutdownSave(context.Background()).Err()
		rdb.Close()
	} else {
		_ = r.cmd.Process.Signal(syscall.SIGTERM)
	}
	select {
	case <-r.done:
	case <-time.After(10 * time.Second):
		_ = r.cmd.Process.Kill()
		<-r.done
	}
}

// Flush empties the server, as a restart without persistence does.
func (r *Server) Flush() {
	r.t.Helper()
	rdb := r.Client()
	defer rdb.Close()
	if err := rdb.FlushAll(context.Background()).Err(); err != nil {
		r.t.Fatalf("FLUSHALL on the test's own redis-server: %v", err)
	}
}

// Freeze stops the process (SIGSTOP): connections stay open, nothing
// answers, as with a paused VM.
func (r *Server) Freeze() {
	r.t.Helper()
	if err := r.cmd.Process.Signal(syscall.SIGSTOP); err != nil {
		r.t.Fatal(err)
	}
}

// Thaw resumes a frozen server (SIGCONT).
func (r *Server) Thaw() {
	r.t.Helper()
	if err := r.cmd.Process.Signal(syscall.SIGCONT); err != nil {
		r.t.Fatal(err)
	}
}
