// Package nginx runs Debian's nginx (nginx-light, /usr/sbin/nginx) for
// end-to-end tests and the load benchmark: in the foreground (daemon off),
// with its own prefix, configuration, pid file, temporary paths and logs in
// the test's temporary directory, listening on a port the test chose
// (e2e/stack.FreePort), and stopped by its own process id when the test
// ends.
//
// # Caveats
//
// When the test runs as root, the workers run as root too (user root):
// they write their temporary files into the test's directory, which only
// root may enter. nginx-light has the auth_request module (the forward-auth
// recipes) and the upstream keepalive pool (the benchmark's bare proxy).
package nginx

import (
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// Path is Debian's nginx-light binary.
const Path = "/usr/sbin/nginx"

// Install is how to get it.
const Install = "apt-get install -y nginx-light"

// requireEnv turns a missing nginx from a skip into a failure.
const requireEnv = "BFFGATE_E2E_REQUIRE"

// Need skips the test when nginx is missing, or fails it when
// BFFGATE_E2E_REQUIRE=1.
func Need(t testing.TB) {
	t.Helper()
	if _, err := exec.LookPath(Path); err != nil {
		why := fmt.Sprintf("%s is missing (%s): %v", Path, Install, err)
		if os.Getenv(requireEnv) == "1" {
			t.Fatalf("%s (%s=1, so this is a failure, not a skip)", why, requireEnv)
		}
		t.Skipf("%s; skipping (set %s=1 to make this a failure)", why, requireEnv)
	}
}

// Config is one nginx to run.
type Config struct {
	// Port is the loopback port Site listens on; Start waits until
	// 127.0.0.1:Port accepts connections.
	Port int
	// Site is included in the http block: upstreams and servers.
	Site string
	// Workers is worker_processes (default 1).
	Workers int
	// WorkerConnections is events.worker_connections (default 4096).
	WorkerConnections int
	// AccessLog writes an access log (access.log in Dir); without it the
	// http block says access_log off (a site may still turn it on).
	AccessLog bool
}

// Server is a running nginx.
type Server struct {
	URL string // http://127.0.0.1:Port
	Dir string // its prefix: configuration, pid file, temporary paths, logs

	cmd     *exec.Cmd
	out     *syncBuffer
	done    chan struct{}
	workers int
}

// Start runs nginx with cfg and waits until it listens and its workers
// run. It fails the test when nginx is missing (call Need first to skip
// instead), refuses the configuration, or does not listen within 15 s.
func Start(t testing.TB, cfg Config) *Server {
	t.Helper()
	if cfg.Workers <= 0 {
		cfg.Workers = 1
	}
	if cfg.WorkerConnections <= 0 {
		cfg.WorkerConnections = 4096
	}
	if cfg.Port <= 0 {
		t.Fatalf("nginx: Config.Port is %d; give a free loopback port", cfg.Port)
	}
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "site.conf"), []byte(cfg.Site), 0o644); err != nil {
		t.Fatal(err)
	}
	user := ""
	if os.Getuid() == 0 {
		user = "user root;\n"
	}
	accessLog := "off"
	if cfg.AccessLog {
		accessLog = filepath.Join(dir, "access.log")
	}
	conf := fmt.Sprintf(`%[1]sdaemon off;
worker_processes %[3]d;
pid %[2]s/nginx.pid;
error_log %[2]s/error.log info;
events { worker_connections %[4]d; }
http {
    access_log %[5]s;
    client_body_temp_path %[2]s/client_body;
    proxy_temp_path %[2]s/proxy;
    fastcgi_temp_path %[2]s/fastcgi;
    uwsgi_temp_path %[2]s/uwsgi;
    scgi_temp_path %[2]s/scgi;
    include %[2]s/site.conf;
}
`, user, dir, cfg.Workers, cfg.WorkerConnections, accessLog)
	path := filepath.Join(dir, "nginx.conf")
	if err := os.WriteFile(path, []byte(conf), 0o644); err != nil {
		t.Fatal(err)
	}
	s := &Server{URL: fmt.Sprintf("http://127.0.0.1:%d", cfg.Port), Dir: dir, out: &syncBuffer{}, done: make(chan struct{}), workers: cfg.Workers}
	s.cmd = exec.Command(Path, "-p", dir, "-e", filepath.Join(dir, "error.log"), "-c", path)
	s.cmd.Stdout, s.cmd.Stderr = s.out, s.out
	if err := s.cmd.Start(); err != nil {
		t.Fatalf("start nginx: %v", err)
	}
	go func() { _ = s.cmd.Wait(); close(s.done) }()
	t.Cleanup(func() {
		s.Stop()
		if t.Failed() {
			t.Logf("nginx output and error log:\n%s", s.Logs())
		}
	})
	s.waitPort(t, fmt.Sprintf("127.0.0.1:%d", cfg.Port))
	deadline := time.Now().Add(15 * time.Second)
	for {
		w, err := s.WorkerPids()
		if err == nil && len(w) == cfg.Workers {
			return s
		}
		if time.Now().After(deadline) {
			t.Fatalf("nginx: %d of %d workers after 15s (%v):\n%s", len(w), cfg.Workers, err, s.Logs())
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// Pid is the master process's id.
func (s *Server) Pid() int { return s.cmd.Process.Pid }

// WorkerPids are the ids of the master's children (the workers).
func (s *Server) WorkerPids() ([]int, error) {
	return children(s.Pid())
}

// Pids are the master's and the workers' ids: every process whose CPU and
// memory are nginx's.
func (s *Server) Pids() ([]int, error) {
	w, err := s.WorkerPids()
	if err != nil {
		return nil, err
	}
	return append([]int{s.Pid()}, w...), nil
}

// Logs returns what nginx printed and its error log.
func (s *Server) Logs() string {
	b, _ := os.ReadFile(filepath.Join(s.Dir, "error.log"))
	return s.out.String() + string(b)
}

// Stop asks nginx for a fast shutdown (SIGINT) and waits; SIGKILL after
// 10 s.
func (s *Server) Stop() {
	select {
	case <-s.done:
		return
	default:
	}
	_ = s.cmd.Process.Signal(syscall.SIGINT)
	select {
	case <-s.done:
	case <-time.After(10 * time.Second):
		_ = s.cmd.Process.Kill()
		<-s.done
	}
}

func (s *Server) waitPort(t testing.TB, addr string) {
	t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for {
		select {
		case <-s.done:
			t.Fatalf("nginx exited before listening on %s:\n%s", addr, s.Logs())
		default:
		}
		c, err := net.DialTimeout("tcp", addr, time.Second)
		if err == nil {
			c.Close()
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("nothing listens on %s after 15s:\n%s", addr, s.Logs())
		}
		time.Sleep(30 * time.Millisecond)
	}
}

// children returns the ids of the processes whose parent is pid
// (proc(5): field 4 of /proc/PID/stat, counted after the command name,
// which may hold spaces and parentheses).
func children(pid int) ([]int, error) {
	dirs, err := os.ReadDir("/proc")
	if err != nil {
		return nil, err
	}
	var out []int
	for _, d := range dirs {
		id, err := strconv.Atoi(d.Name())
		if err != nil {
			continue
		}
		b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", id))
		if err != nil {
			continue
		}
		s := string(b)
		i := strings.LastIndexByte(s, ')')
		if i < 0 {
			continue
		}
		f := strings.Fields(s[i+1:])
		if len(f) > 1 && f[1] == strconv.Itoa(pid) {
			out = append(out, id)
		}
	}
	slices.Sort(out)
	return out, nil
}

type syncBuffer struct {
	mu sync.Mutex
	b  strings.Builder
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.b.Len() > 1<<20 {
		return len(p), nil // enough to say why it failed
	}
	return b.b.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.String()
}
