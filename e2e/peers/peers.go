// Package peers runs third-party OpenID implementations from npm (panva's
// oidc-provider, openid-client and jose, pinned in package-lock.json) as
// child processes for bffgate's end-to-end tests, and gives Go tests typed
// handles on them.
//
//   - StartProvider: oidc-provider as the gateway's upstream provider, with
//     admin hooks (end a user's session, read refresh-token reuse counters).
//   - StartRP: openid-client as a relying party of an issuer, driven over a
//     JSON-lines protocol on stdin/stdout; the test does the browser part.
//   - StartJose: jose as an independent verifier and forger of tokens.
//
// Every process listens on loopback only and is stopped when the test ends.
// The node_modules directory is created with `npm ci` from the lock file
// the first time a test needs it (see NodeModules).
//
// # Caveats
//
// Node and npm must be on PATH. Without them the tests skip with a message,
// unless BFFGATE_E2E_REQUIRE=1, when they fail (CI sets it, so a broken
// machine cannot pass by skipping).
package peers

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
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

// RequireEnv is the environment variable that turns a missing node, npm or
// browser from a skip into a failure.
const RequireEnv = "BFFGATE_E2E_REQUIRE"

// startTimeout bounds how long a peer may take to print its ready line.
const startTimeout = 30 * time.Second

// callTimeout bounds one JSON-lines command when the caller's context has no
// deadline.
const callTimeout = 30 * time.Second

// Dir returns the directory of this package: the npm project with
// package.json, package-lock.json and the .mjs scripts.
func Dir() string {
	_, file, _, _ := runtime.Caller(0)
	return filepath.Dir(file)
}

// unavailable skips the test with why, or fails it when RequireEnv is 1.
func unavailable(t testing.TB, why string) {
	t.Helper()
	if os.Getenv(RequireEnv) == "1" {
		t.Fatalf("%s (%s=1, so this is a failure, not a skip)", why, RequireEnv)
	}
	t.Skipf("%s; skipping (set %s=1 to make this a failure)", why, RequireEnv)
}

var (
	npmOnce sync.Once
	npmErr  error
	npmTook time.Duration
)

// required are the packages every script imports; their presence means
// node_modules is installed.
var required = []string{"oidc-provider", "openid-client", "jose"}

func installed(dir string) bool {
	for _, p := range required {
		if _, err := os.Stat(filepath.Join(dir, "node_modules", p, "package.json")); err != nil {
			return false
		}
	}
	return true
}

// NodeModules makes sure e2e/peers/node_modules exists and returns the
// package directory. When it is missing it runs `npm ci` once per test
// binary, under a file lock so that test binaries of several packages
// running at once do not install over each other. It skips the test when
// node or npm is not on PATH (fails when BFFGATE_E2E_REQUIRE=1).
func NodeModules(t testing.TB) string {
	t.Helper()
	for _, bin := range []string{"node", "npm"} {
		if _, err := exec.LookPath(bin); err != nil {
			unavailable(t, fmt.Sprintf("%s is not on PATH: the npm peers (oidc-provider, openid-client, jose) need Node.js 20+ and npm", bin))
		}
	}
	dir := Dir()
	npmOnce.Do(func() {
		if installed(dir) {
			return
		}
		unlock, err := lockFile(filepath.Join(os.TempDir(), "bffgate-e2e-npm-ci.lock"))
		if err != nil {
			npmErr = err
			return
		}
		defer unlock()
		if installed(dir) { // another test binary installed it meanwhile
			return
		}
		start := time.Now()
		cmd := exec.Command("npm", "ci", "--no-audit", "--no-fund", "--loglevel=error")
		cmd.Dir = dir
		out, err := cmd.CombinedOutput()
		npmTook = time.Since(start)
		if err != nil {
			npmErr = fmt.Errorf("npm ci in %s failed after %s: %v\n%s", dir, npmTook.Round(time.Millisecond), err, out)
		}
	})
	if npmErr != nil {
		t.Fatal(npmErr)
	}
	if npmTook > 0 {
		t.Logf("npm ci in %s took %s", dir, npmTook.Round(time.Millisecond))
	}
	return dir
}

// lockFile takes an exclusive flock on path and returns its release.
func lockFile(path string) (func(), error) {
	f, err := os.OpenFile(path, os.O_CREATE|os.O_RDWR, 0o600)
	if err != nil {
		return nil, fmt.Errorf("open npm ci lock %s: %w", path, err)
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX); err != nil {
		f.Close()
		return nil, fmt.Errorf("lock %s: %w", path, err)
	}
	return func() {
		_ = syscall.Flock(int(f.Fd()), syscall.LOCK_UN)
		f.Close()
	}, nil
}

// PeerError is an error a peer reported for one command: the fields of the
// library's exception (openid-client's ResponseBodyError carries the OAuth
// error and status; jose's errors carry a code such as
// ERR_JWS_SIGNATURE_VERIFICATION_FAILED).
type PeerError struct {
	Op               string `json:"-"`
	Name             string `json:"name"`
	Message          string `json:"message"`
	Code             string `json:"code"`
	OAuthError       string `json:"error"`
	ErrorDescription string `json:"error_description"`
	Status           int    `json:"status"`
	Claim            string `json:"claim"`
	Reason           string `json:"reason"`
	Cause            string `json:"cause"`
}

func (e *PeerError) Error() string {
	var b strings.Builder
	fmt.Fprintf(&b, "%s: %s", e.Op, e.Name)
	if e.Code != "" {
		fmt.Fprintf(&b, " (%s)", e.Code)
	}
	fmt.Fprintf(&b, ": %s", e.Message)
	if e.OAuthError != "" {
		fmt.Fprintf(&b, " [error=%s", e.OAuthError)
		if e.ErrorDescription != "" {
			fmt.Fprintf(&b, " description=%q", e.ErrorDescription)
		}
		if e.Status != 0 {
			fmt.Fprintf(&b, " status=%d", e.Status)
		}
		b.WriteString("]")
	}
	if e.Cause != "" {
		fmt.Fprintf(&b, " (cause: %s)", e.Cause)
	}
	return b.String()
}

// ErrExited is returned by calls to a peer process that is no longer running.
var ErrExited = errors.New("peers: the peer process exited")

// proc is one node child process speaking JSON lines on stdout: first a
// ready line, then answers {"id", "ok", "result" | "error"}.
type proc struct {
	name   string
	cmd    *exec.Cmd
	stdin  io.WriteCloser
	stderr *syncBuffer
	done   chan struct{}
	ready  chan json.RawMessage

	writeMu sync.Mutex
	mu      sync.Mutex // guards the fields below
	nextID  int64
	waiting map[int64]chan reply
	exited  bool
}

type reply struct {
	ID     *int64          `json:"id"`
	OK     bool            `json:"ok"`
	Result json.RawMessage `json:"result"`
	Error  *PeerError      `json:"error"`
}

// startProc runs `node script args...` in the peers directory and waits for
// its ready line, which it returns.
func startProc(t testing.TB, script string, args ...string) (*proc, json.RawMessage) {
	t.Helper()
	dir := NodeModules(t)
	p := &proc{
		name:    script,
		stderr:  &syncBuffer{},
		done:    make(chan struct{}),
		ready:   make(chan json.RawMessage, 1),
		waiting: make(map[int64]chan reply),
	}
	p.cmd = exec.Command("node", append([]string{script}, args...)...)
	p.cmd.Dir = dir
	p.cmd.Stderr = p.stderr
	stdin, err := p.cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	stdout, err := p.cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	p.stdin = stdin
	if err := p.cmd.Start(); err != nil {
		t.Fatalf("start node %s: %v", script, err)
	}
	readDone := make(chan struct{})
	go func() { p.read(stdout); close(readDone) }()
	go func() {
		<-readDone // Wait closes stdout; read everything first
		_ = p.cmd.Wait()
		p.mu.Lock()
		p.exited = true
		for id, ch := range p.waiting {
			close(ch)
			delete(p.waiting, id)
		}
		p.mu.Unlock()
		close(p.done)
	}()
	t.Cleanup(func() {
		p.stop()
		if t.Failed() {
			t.Logf("%s stderr:\n%s", script, p.stderr.String())
		}
	})
	select {
	case line := <-p.ready:
		var r struct {
			Ready bool            `json:"ready"`
			Error json.RawMessage `json:"error"`
		}
		if err := json.Unmarshal(line, &r); err != nil || !r.Ready {
			t.Fatalf("node %s did not start: %s\nstderr:\n%s", script, line, p.stderr.String())
		}
		return p, line
	case <-p.done:
		t.Fatalf("node %s exited before it was ready: %v\nstderr:\n%s", script, p.cmd.ProcessState, p.stderr.String())
	case <-time.After(startTimeout):
		t.Fatalf("node %s: no ready line after %s\nstderr:\n%s", script, startTimeout, p.stderr.String())
	}
	return nil, nil
}

func (p *proc) read(stdout io.Reader) {
	sc := bufio.NewScanner(stdout)
	sc.Buffer(make([]byte, 0, 64*1024), 16<<20)
	first := true
	for sc.Scan() {
		line := bytes.TrimSpace(sc.Bytes())
		if len(line) == 0 || line[0] != '{' {
			// Not a protocol line (a library printing to stdout): keep it
			// with the logs.
			fmt.Fprintf(p.stderr, "[stdout] %s\n", line)
			continue
		}
		if first {
			first = false
			p.ready <- append(json.RawMessage(nil), line...)
			continue
		}
		var r reply
		if err := json.Unmarshal(line, &r); err != nil || r.ID == nil {
			fmt.Fprintf(p.stderr, "[stdout, not an answer] %s\n", line)
			continue
		}
		p.mu.Lock()
		ch := p.waiting[*r.ID]
		delete(p.waiting, *r.ID)
		p.mu.Unlock()
		if ch != nil {
			ch <- r
		}
	}
}

// call sends {"id", "op", ...fields of req} and decodes the result into out
// (when out is not nil). Calls may run concurrently.
func (p *proc) call(ctx context.Context, op string, req map[string]any, out any) error {
	if _, ok := ctx.Deadline(); !ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, callTimeout)
		defer cancel()
	}
	ch := make(chan reply, 1)
	p.mu.Lock()
	if p.exited {
		p.mu.Unlock()
		return fmt.Errorf("%s %s: %w", p.name, op, ErrExited)
	}
	p.nextID++
	id := p.nextID
	p.waiting[id] = ch
	p.mu.Unlock()

	msg := map[string]any{}
	for k, v := range req {
		msg[k] = v
	}
	msg["id"] = id
	msg["op"] = op
	line, err := json.Marshal(msg)
	if err != nil {
		return fmt.Errorf("%s %s: encode command: %w", p.name, op, err)
	}
	p.writeMu.Lock()
	_, err = p.stdin.Write(append(line, '\n'))
	p.writeMu.Unlock()
	if err != nil {
		return fmt.Errorf("%s %s: write command: %w (%w)", p.name, op, err, ErrExited)
	}
	select {
	case r, ok := <-ch:
		if !ok {
			return fmt.Errorf("%s %s: %w", p.name, op, ErrExited)
		}
		if !r.OK {
			if r.Error == nil {
				r.Error = &PeerError{Message: "failed without an error object"}
			}
			r.Error.Op = op
			return r.Error
		}
		if out != nil {
			if err := json.Unmarshal(r.Result, out); err != nil {
				return fmt.Errorf("%s %s: decode result %s: %w", p.name, op, r.Result, err)
			}
		}
		return nil
	case <-ctx.Done():
		p.mu.Lock()
		delete(p.waiting, id)
		p.mu.Unlock()
		return fmt.Errorf("%s %s: %w", p.name, op, ctx.Err())
	}
}

// stop closes stdin (the JSON-lines peers exit on EOF), sends SIGTERM, and
// kills the process if it is still running after a few seconds.
func (p *proc) stop() {
	select {
	case <-p.done:
		return
	default:
	}
	_ = p.stdin.Close()
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.done:
	case <-time.After(5 * time.Second):
		_ = p.cmd.Process.Kill()
		<-p.done
	}
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
