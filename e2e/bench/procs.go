package bench

import (
	"bufio"
	"bytes"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// Proc is one process the benchmark started (upstream, bare proxy,
// oauth2-proxy). It is stopped, by its own id, when the test ends.
type Proc struct {
	Name string
	URL  string // base URL it serves on
	cmd  *exec.Cmd
	logs *logBuffer
	done chan struct{}
}

// Pid is the process id.
func (p *Proc) Pid() int { return p.cmd.Process.Pid }

// Logs returns the end of what the process printed.
func (p *Proc) Logs() string { return p.logs.String() }

// Stop sends SIGTERM and waits (SIGKILL after 10 s).
func (p *Proc) Stop() {
	select {
	case <-p.done:
		return
	default:
	}
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.done:
	case <-time.After(10 * time.Second):
		_ = p.cmd.Process.Kill()
		<-p.done
	}
}

func startProc(t testing.TB, name, bin string, args, env []string) *Proc {
	t.Helper()
	p := &Proc{Name: name, logs: &logBuffer{}, done: make(chan struct{})}
	p.cmd = exec.Command(bin, args...)
	p.cmd.Env = append(os.Environ(), env...)
	p.cmd.Stdout, p.cmd.Stderr = p.logs, p.logs
	if err := p.cmd.Start(); err != nil {
		t.Fatalf("start %s: %v", name, err)
	}
	go func() { _ = p.cmd.Wait(); close(p.done) }()
	t.Cleanup(p.Stop)
	return p
}

// StartListening starts one of the benchmark's own servers, which print
// "listening on URL" once they accept connections.
func StartListening(t testing.TB, name, bin string, args ...string) *Proc {
	t.Helper()
	p := startProc(t, name, bin, args, nil)
	deadline := time.Now().Add(15 * time.Second)
	for time.Now().Before(deadline) {
		if _, after, ok := strings.Cut(p.logs.String(), "listening on "); ok {
			p.URL = strings.TrimSpace(strings.SplitN(after, "\n", 2)[0])
			return p
		}
		select {
		case <-p.done:
			t.Fatalf("%s exited before listening: %s", name, p.Logs())
		case <-time.After(20 * time.Millisecond):
		}
	}
	t.Fatalf("%s did not print its address within 15s: %s", name, p.Logs())
	return nil
}

// StartPolling starts a server and waits until GET readyURL answers 200.
func StartPolling(t testing.TB, name, bin, baseURL, readyURL string, args, env []string) *Proc {
	t.Helper()
	p := startProc(t, name, bin, args, env)
	p.URL = baseURL
	c := &http.Client{Timeout: time.Second}
	deadline := time.Now().Add(30 * time.Second)
	for time.Now().Before(deadline) {
		if resp, err := c.Get(readyURL); err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return p
			}
		}
		select {
		case <-p.done:
			t.Fatalf("%s exited: %s", name, p.Logs())
		case <-time.After(50 * time.Millisecond):
		}
	}
	t.Fatalf("%s: %s not ready within 30s: %s", name, readyURL, p.Logs())
	return nil
}

// GoBuild builds the package pkg (a path relative to the module root, such
// as ./e2e/bench/internal/upstream) into dir and returns the binary.
func GoBuild(t testing.TB, pkg, dir string) string {
	t.Helper()
	out := filepath.Join(dir, filepath.Base(pkg))
	cmd := exec.Command("go", "build", "-o", out, pkg)
	cmd.Dir = moduleRoot(t)
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go build %s: %v\n%s", pkg, err, b)
	}
	return out
}

func moduleRoot(t testing.TB) string {
	t.Helper()
	wd, err := os.Getwd()
	if err != nil {
		t.Fatal(err)
	}
	return filepath.Join(wd, "..", "..") // the test runs in e2e/bench
}

// logBuffer keeps the last 256 KiB a process printed: enough to show why
// it failed, bounded whatever it logs under load.
type logBuffer struct {
	mu sync.Mutex
	b  []byte
}

const logKeep = 256 << 10

func (l *logBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.b = append(l.b, p...)
	if len(l.b) > 2*logKeep {
		l.b = append([]byte(nil), l.b[len(l.b)-logKeep:]...)
	}
	return len(p), nil
}

func (l *logBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return string(l.b)
}

// firstLine runs a command and returns the first line it prints.
func firstLine(name string, args ...string) string {
	out, _ := exec.Command(name, args...).CombinedOutput()
	line, _, _ := bytes.Cut(out, []byte("\n"))
	return strings.TrimSpace(string(line))
}

// cpuModel is the "model name" of /proc/cpuinfo.
func cpuModel() string {
	f, err := os.Open("/proc/cpuinfo")
	if err != nil {
		return "unknown"
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if k, v, ok := strings.Cut(sc.Text(), ":"); ok && strings.TrimSpace(k) == "model name" {
			return strings.TrimSpace(v)
		}
	}
	return "unknown"
}

var _ io.Writer = (*logBuffer)(nil)

// must turns a (value, error) pair into the value, failing the test on
// the error: must(f())(t).
func must[T any](v T, err error) func(testing.TB) T {
	return func(t testing.TB) T {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
		return v
	}
}

func mustf(t testing.TB, err error, format string, args ...any) {
	t.Helper()
	if err != nil {
		t.Fatalf("%s: %v", fmt.Sprintf(format, args...), err)
	}
}

// loadAvg is the first three fields of /proc/loadavg.
func loadAvg() string {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return "unknown"
	}
	f := strings.Fields(string(b))
	if len(f) < 3 {
		return "unknown"
	}
	return strings.Join(f[:3], ", ")
}
