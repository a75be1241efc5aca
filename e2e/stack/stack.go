// Package stack runs the real bffgate binary for end-to-end tests: built
// once per version of the sources and kept in the user's cache directory
// (see Binary), started on free loopback ports with the zero-config
// defaults plus the BFFGATE_* overrides a test gives, and stopped when the
// test ends.
//
// Tests therefore exercise exactly what `go run ./cmd/bffgate` runs: the
// issuer, the gateway and the demo API in one process, talking to each
// other over HTTP.
package stack

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	mrand "math/rand/v2"
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

// Binary returns the path of a bffgate binary built from this checkout's
// cmd/bffgate, building it when there is none for the current sources.
//
// The binary is kept in the user's cache directory (bffgate-e2e under
// os.UserCacheDir), keyed by the main package's build ID, so that the
// test packages that run in parallel processes share one binary and a
// change to any source builds a new one. Nothing goes to the temporary
// directory, and binaries unused for an hour are removed.
func Binary(t testing.TB) string {
	t.Helper()
	p, err := defaultCache.binary()
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// defaultCache keeps the binaries under the user's cache directory
// ($XDG_CACHE_HOME or ~/.cache on Linux), in bffgate-e2e.
var defaultCache = &binaryCache{}

// unusedFor is how long a cached binary (or an abandoned build directory)
// stays after its last use. Every Start touches the binary it runs, so a
// test process never loses one it still uses; a one-hour margin covers a
// test that runs for long without starting a process.
const unusedFor = time.Hour

// binaryCache builds cmd/bffgate into root/KEY/bffgate, where KEY is a
// hash of the main package's build ID (go list -export): Go derives that
// ID from the contents of every source file, embedded file and dependency
// of the binary, the toolchain and the build flags, so it changes exactly
// when the binary would.
//
// Test packages run as parallel processes, and each calls Binary. They
// agree on the path without talking to each other: the first builds into
// a fresh directory of its own and renames the binary into place (an
// atomic step, so no process ever runs a half-written file; two that race
// rename identical files), the others find it there. Nothing is left in
// the temporary directory, and entries unused for an hour (those of older
// sources, or builds a killed process abandoned) are removed by the next
// process that looks.
type binaryCache struct {
	root string // "" means under os.UserCacheDir()

	mu   sync.Mutex
	path string // the binary found or built, "" before the first call
	err  error  // a failed build, reported to every later caller
}

// binary returns the cached binary's path, and touches it: the mark of
// use the pruning goes by. When the binary is gone (another process
// pruned it after an hour without use), it is found or built again.
func (c *binaryCache) binary() (string, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.err != nil {
		return "", c.err
	}
	if c.path != "" && touch(c.path) == nil {
		return c.path, nil
	}
	c.path, c.err = c.resolve()
	return c.path, c.err
}

// forget makes the next call look for the binary again.
func (c *binaryCache) forget() {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.path = ""
}

func (c *binaryCache) resolve() (string, error) {
	root := c.root
	if root == "" {
		dir, err := os.UserCacheDir()
		if err != nil {
			// No home directory: the temporary directory, with the same
			// keying and pruning.
			dir = os.TempDir()
		}
		root = filepath.Join(dir, "bffgate-e2e")
	}
	if err := os.MkdirAll(root, 0o755); err != nil {
		return "", fmt.Errorf("stack: the binary cache %s: %w", root, err)
	}
	_, file, _, _ := runtime.Caller(0)
	module := filepath.Join(filepath.Dir(file), "..", "..")
	list := exec.Command("go", "list", "-export", "-f", "{{.BuildID}}", "./cmd/bffgate")
	list.Dir = module
	id, err := list.Output()
	if err != nil {
		var ee *exec.ExitError
		if errors.As(err, &ee) {
			return "", fmt.Errorf("go list -export ./cmd/bffgate: %v\n%s", err, ee.Stderr)
		}
		return "", fmt.Errorf("go list -export ./cmd/bffgate: %w", err)
	}
	// GOFLAGS may carry link flags, which the package's build ID does not
	// cover.
	sum := sha256.Sum256([]byte(strings.TrimSpace(string(id)) + "\x00" + os.Getenv("GOFLAGS")))
	key := hex.EncodeToString(sum[:16])
	name := "bffgate"
	if runtime.GOOS == "windows" {
		name += ".exe"
	}
	final := filepath.Join(root, key, name)
	defer prune(root, key, time.Now().Add(-unusedFor))
	if touch(final) == nil {
		return final, nil
	}
	if err := os.MkdirAll(filepath.Dir(final), 0o755); err != nil {
		return "", fmt.Errorf("stack: the binary cache: %w", err)
	}
	tmp, err := os.MkdirTemp(root, buildDirPrefix)
	if err != nil {
		return "", fmt.Errorf("stack: the binary cache: %w", err)
	}
	defer os.RemoveAll(tmp)
	built := filepath.Join(tmp, name)
	build := exec.Command("go", "build", "-o", built, "./cmd/bffgate")
	build.Dir = module
	if out, err := build.CombinedOutput(); err != nil {
		return "", fmt.Errorf("go build ./cmd/bffgate: %v\n%s", err, out)
	}
	if err := os.Rename(built, final); err != nil {
		// Where a running binary cannot be replaced (Windows), another
		// process's identical one may already be in place.
		if touch(final) == nil {
			return final, nil
		}
		return "", fmt.Errorf("stack: placing the built binary: %w", err)
	}
	return final, nil
}

// buildDirPrefix names the directories builds run in, inside the cache.
const buildDirPrefix = ".build-"

// touch marks path as used now; it fails when path does not exist.
func touch(path string) error {
	now := time.Now()
	return os.Chtimes(path, now, now)
}

// prune removes, best effort, the cache entries other than keep whose
// binary was last used before cutoff, and build directories older than
// cutoff (those of processes killed mid-build).
func prune(root, keep string, cutoff time.Time) {
	entries, err := os.ReadDir(root)
	if err != nil {
		return
	}
	for _, e := range entries {
		if e.Name() == keep || !e.IsDir() {
			continue
		}
		dir := filepath.Join(root, e.Name())
		// An entry's age is its newest file's: the binary, touched on
		// every use, or a build in progress.
		newest := time.Time{}
		if info, err := e.Info(); err == nil {
			newest = info.ModTime()
		}
		files, _ := os.ReadDir(dir)
		for _, f := range files {
			if info, err := f.Info(); err == nil && info.ModTime().After(newest) {
				newest = info.ModTime()
			}
		}
		if newest.Before(cutoff) {
			_ = os.RemoveAll(dir)
		}
	}
}

// Stack is one running bffgate process.
type Stack struct {
	GatewayURL string // http://127.0.0.1:PORT (the browser's origin)
	IssuerURL  string
	APIURL     string
	DataDir    string
	// ConfigFile is the configuration file written from
	// Options.ConfigYAML ("" without one). A test may rewrite it and send
	// SIGHUP (Signal) to have bffgate reload it.
	ConfigFile string

	t       testing.TB
	env     []string
	cmd     *exec.Cmd
	logs    *syncBuffer
	logFile string
	done    chan struct{}

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
	// GatewayPort is the gateway's port (default a free one): a test that
	// registers the gateway at a provider before starting it knows its
	// redirect URI.
	GatewayPort int
	// LogFile, when set, receives the process's output (appended; the
	// file is the process's stdout and stderr, with no copy through the
	// test process) instead of memory: for a process that logs a line per
	// request under load (the access log in e2e/bench), whose output would
	// otherwise grow the test's memory by hundreds of MB. Logs then reads
	// the file's last MiB. The file may be truncated while the process
	// runs: it writes at the end, whatever the end is.
	LogFile string
	// IssuerPort is the embedded issuer's port (default a free one): a
	// configuration file that names the issuer's URL (a frontend whose
	// provider is the embedded issuer) is written before the start.
	IssuerPort int
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
	// FreePort's ports are free when it returns, not when bffgate binds
	// them: another process of the parallel test run (a redis-server, a
	// second stack) can take one in between. A start that fails on a port
	// in use is tried again on fresh ports.
	for attempt := 1; ; attempt++ {
		s, err := startOn(t, opts, dataDir, host)
		if err == nil {
			t.Cleanup(s.Stop)
			return s
		}
		if !errors.Is(err, errPortInUse) || attempt == 3 {
			t.Fatal(err)
		}
		t.Logf("bffgate found a port taken (attempt %d); starting again on other ports", attempt)
	}
}

// errPortInUse marks a start that failed because a listen address was
// taken.
var errPortInUse = errors.New("a listen port is in use")

// startOn starts bffgate on fresh free ports.
func startOn(t testing.TB, opts Options, dataDir, host string) (*Stack, error) {
	t.Helper()
	gw, is, api := opts.GatewayPort, opts.IssuerPort, FreePort(t)
	if gw == 0 {
		gw = FreePort(t)
	}
	if is == 0 {
		is = FreePort(t)
	}
	s := &Stack{
		GatewayURL: fmt.Sprintf("http://%s:%d", host, gw),
		IssuerURL:  fmt.Sprintf("http://127.0.0.1:%d", is),
		APIURL:     fmt.Sprintf("http://127.0.0.1:%d", api),
		DataDir:    dataDir,
		t:          t,
		logFile:    opts.LogFile,
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
		s.ConfigFile = p
		s.env = append(s.env, "BFFGATE_CONFIG="+p)
	}
	if err := s.launch(); err != nil {
		s.Stop()
		return nil, err
	}
	return s, nil
}

// start runs the process again on the stack's ports (a restart).
func (s *Stack) start() {
	s.t.Helper()
	if err := s.launch(); err != nil {
		s.t.Fatal(err)
	}
}

// launch runs the process and waits until it is ready; a process that
// exits because a port is taken gives an error matching errPortInUse.
func (s *Stack) launch() error {
	s.t.Helper()
	s.logs = &syncBuffer{}
	err := s.exec()
	if errors.Is(err, fs.ErrNotExist) {
		// Another process pruned the binary between Binary's check and
		// the exec (only possible after an hour without use): find or
		// build it again.
		defaultCache.forget()
		err = s.exec()
	}
	if err != nil {
		return fmt.Errorf("start bffgate: %w", err)
	}
	s.done = make(chan struct{})
	go func() { _ = s.cmd.Wait(); close(s.done) }()
	if err := s.waitReady(30 * time.Second); err != nil {
		logs := s.Logs()
		if strings.Contains(logs, "address already in use") {
			err = fmt.Errorf("%w: %w", errPortInUse, err)
		}
		return fmt.Errorf("bffgate did not become ready: %w\nlogs:\n%s", err, logs)
	}
	return nil
}

// exec starts the process.
func (s *Stack) exec() error {
	s.cmd = exec.Command(Binary(s.t))
	s.cmd.Env = s.env
	s.cmd.Stdout = s.logs
	s.cmd.Stderr = s.logs
	if s.logFile != "" {
		f, err := os.OpenFile(s.logFile, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o600)
		if err != nil {
			return err
		}
		// The child has its own copy of the descriptor once started.
		defer f.Close()
		s.cmd.Stdout, s.cmd.Stderr = f, f
	}
	return s.cmd.Start()
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

// Logs returns everything the process printed so far (with
// Options.LogFile, the file's last MiB).
func (s *Stack) Logs() string {
	if s.logFile == "" {
		return s.logs.String()
	}
	f, err := os.Open(s.logFile)
	if err != nil {
		return fmt.Sprintf("(log file: %v)", err)
	}
	defer f.Close()
	const keep = 1 << 20
	if fi, err := f.Stat(); err == nil && fi.Size() > keep {
		_, _ = f.Seek(fi.Size()-keep, 0)
	}
	b, _ := io.ReadAll(f)
	return string(b)
}

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
		s.t.Logf("bffgate logs:\n%s", s.Logs())
	}
}

// Signal sends sig to the running process (SIGHUP: reload the
// configuration file).
func (s *Stack) Signal(sig os.Signal) error {
	select {
	case <-s.done:
		return fmt.Errorf("bffgate is not running (%v)", s.cmd.ProcessState)
	default:
	}
	return s.cmd.Process.Signal(sig)
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
//
// The port is drawn at random below Linux's ephemeral range (32768 and up),
// not asked of the kernel with port 0: a port the kernel hands out for
// port 0 comes from the range it also gives every outgoing connection, so
// under load (other packages' tests run beside, wrk opens thousands of
// connections) a client socket could take it between this call and the
// server's bind. Below the range only another FreePort can collide.
func FreePort(t testing.TB) int {
	t.Helper()
	const lo, hi = 20000, 32768
	for range 200 {
		port := lo + mrand.IntN(hi-lo)
		ln, err := net.Listen("tcp", fmt.Sprintf("127.0.0.1:%d", port))
		if err != nil {
			continue // taken
		}
		ln.Close()
		return port
	}
	t.Fatalf("no free port on 127.0.0.1 between %d and %d after 200 tries", lo, hi)
	return 0
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
