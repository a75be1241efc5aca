// Package stack runs the real bffgate binary for end-to-end tests: built
// once per test process, started on free loopback ports with the
// zero-config defaults plus the BFFGATE_* overrides a test gives, and
// stopped when the test ends.
//
// Tests therefore exercise exactly what `go run ./cmd/bffgate` runs: the
// issuer, the gateway and the demo API in one process, talking to each
// other over HTTP.
package stack

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

var (
	buildOnce sync.Once
	buildPath string
	buildErr  error
)

// Binary builds cmd/bffgate once per test process and returns its path.
func Binary(t testing.TB) string {
	t.Helper()
	buildOnce.Do(func() {
		dir, err := os.MkdirTemp("", "bffgate-e2e-bin")
		if err != nil {
			buildErr = err
			return
		}
		buildPath = filepath.Join(dir, "bffgate")
		_, file, _, _ := runtime.Caller(0)
		root := filepath.Join(filepath.Dir(file), "..", "..")
		cmd := exec.Command("go", "build", "-o", buildPath, "./cmd/bffgate")
		cmd.Dir = root
		out, err := cmd.CombinedOutput()
		if err != nil {
			buildErr = fmt.Errorf("go build ./cmd/bffgate: %v\n%s", err, out)
		}
	})
	if buildErr != nil {
		t.Fatal(buildErr)
	}
	return buildPath
}

// Stack is one running bffgate process.
type Stack struct {
	GatewayURL string // http://127.0.0.1:PORT (the browser's origin)
	IssuerURL  string
	APIURL     string
	DataDir    string

	t    testing.TB
	env  []string
	cmd  *exec.Cmd
	logs *syncBuffer
	done chan struct{}

	noGateway bool
}

// Options for Start.
type Options struct {
	// Env are BFFGATE_* overrides on top of the zero-config defaults, such
	// as "BFFGATE_GATEWAY_SESSION_STORE=cookie".
	Env []string
	// ConfigYAML, when set, is written to a file and passed with --config
	// (the zero-config defaults then do not apply).
	ConfigYAML string
	// DataDir reuses a data directory (a restart); default a fresh one.
	DataDir string
	// Host is the host name the stack is reached by (default 127.0.0.1).
	GatewayHost string
	// NoGateway runs the issuer (and demo API) alone; Start then waits for
	// the issuer only.
	NoGateway bool
}

// Start runs bffgate and waits until every listener is ready.
func Start(t testing.TB, opts Options) *Stack {
	t.Helper()
	Binary(t) // build before the clock of any readiness wait starts
	dataDir := opts.DataDir
	if dataDir == "" {
		dataDir = t.TempDir()
	}
	host := opts.GatewayHost
	if host == "" {
		host = "127.0.0.1"
	}
	gw, is, api := FreePort(t), FreePort(t), FreePort(t)
	s := &Stack{
		GatewayURL: fmt.Sprintf("http://%s:%d", host, gw),
		IssuerURL:  fmt.Sprintf("http://127.0.0.1:%d", is),
		APIURL:     fmt.Sprintf("http://127.0.0.1:%d", api),
		DataDir:    dataDir,
		t:          t,
	}
	s.env = append([]string{
		"PATH=" + os.Getenv("PATH"),
		"HOME=" + os.Getenv("HOME"),
		"BFFGATE_DATA_DIR=" + dataDir,
		fmt.Sprintf("BFFGATE_GATEWAY_LISTEN=127.0.0.1:%d", gw),
		"BFFGATE_GATEWAY_PUBLIC_URL=" + s.GatewayURL,
		fmt.Sprintf("BFFGATE_ISSUER_LISTEN=127.0.0.1:%d", is),
		fmt.Sprintf("BFFGATE_DEMO_API_LISTEN=127.0.0.1:%d", api),
		"BFFGATE_LOG_FORMAT=json",
	}, opts.Env...)
	if opts.NoGateway {
		s.env = append(s.env, "BFFGATE_GATEWAY_ENABLED=false")
		s.noGateway = true
	}
	if opts.ConfigYAML != "" {
		p := filepath.Join(t.TempDir(), "bffgate.yaml")
		if err := os.WriteFile(p, []byte(opts.ConfigYAML), 0o600); err != nil {
			t.Fatal(err)
		}
		s.env = append(s.env, "BFFGATE_CONFIG="+p)
	}
	s.start()
	t.Cleanup(s.Stop)
	return s
}

func (s *Stack) start() {
	s.t.Helper()
	s.logs = &syncBuffer{}
	s.cmd = exec.Command(Binary(s.t))
	s.cmd.Env = s.env
	s.cmd.Stdout = s.logs
	s.cmd.Stderr = s.logs
	if err := s.cmd.Start(); err != nil {
		s.t.Fatalf("start bffgate: %v", err)
	}
	s.done = make(chan struct{})
	go func() { _ = s.cmd.Wait(); close(s.done) }()
	if err := s.waitReady(30 * time.Second); err != nil {
		s.t.Fatalf("bffgate did not become ready: %v\nlogs:\n%s", err, s.logs.String())
	}
}

func (s *Stack) waitReady(limit time.Duration) error {
	deadline := time.Now().Add(limit)
	c := &http.Client{Timeout: 2 * time.Second}
	urls := []string{s.IssuerURL + "/readyz"}
	if !s.noGateway {
		urls = append(urls, s.GatewayURL+"/readyz")
	}
	for _, u := range urls {
		for {
			select {
			case <-s.done:
				return fmt.Errorf("bffgate exited: %v", s.cmd.ProcessState)
			default:
			}
			resp, err := c.Get(u)
			if err == nil {
				resp.Body.Close()
				if resp.StatusCode == http.StatusOK {
					break
				}
			}
			if time.Now().After(deadline) {
				return fmt.Errorf("%s: not ready after %s (last: %v)", u, limit, err)
			}
			time.Sleep(50 * time.Millisecond)
		}
	}
	return nil
}

// Logs returns everything the process printed so far.
func (s *Stack) Logs() string { return s.logs.String() }

// Stop sends SIGTERM and waits for a graceful exit (SIGKILL after 15 s).
func (s *Stack) Stop() {
	if s.cmd == nil || s.cmd.Process == nil {
		return
	}
	select {
	case <-s.done:
		return
	default:
	}
	_ = s.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-s.done:
	case <-time.After(15 * time.Second):
		_ = s.cmd.Process.Kill()
		<-s.done
	}
	if s.t.Failed() {
		s.t.Logf("bffgate logs:\n%s", s.logs.String())
	}
}

// Kill sends SIGKILL (a crash) and waits for the process to be gone.
func (s *Stack) Kill() {
	_ = s.cmd.Process.Kill()
	<-s.done
}

// Restart starts the process again with the same ports, data and options.
func (s *Stack) Restart() {
	s.Stop()
	s.start()
}

// Wait blocks until the process exits or ctx ends.
func (s *Stack) Wait(ctx context.Context) error {
	select {
	case <-s.done:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// LogLines returns the log lines that contain every one of substrs.
func (s *Stack) LogLines(substrs ...string) []string {
	var out []string
	for _, line := range strings.Split(s.Logs(), "\n") {
		ok := true
		for _, sub := range substrs {
			if !strings.Contains(line, sub) {
				ok = false
				break
			}
		}
		if ok && line != "" {
			out = append(out, line)
		}
	}
	return out
}

// FreePort returns a TCP port free on 127.0.0.1 at the time of the call.
func FreePort(t testing.TB) int {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port
}

type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.String()
}
