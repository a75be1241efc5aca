package nginx

import (
	"fmt"
	"io"
	"net"
	"net/http"
	"testing"

	"github.com/bffgate/bffgate/e2e/stack"
	"github.com/bffgate/bffgate/internal/testhttp"
)

// TestStart: nginx runs the site on the chosen port with the asked-for
// workers, which Pids finds, and Stop ends it.
func TestStart(t *testing.T) {
	Need(t)
	port := stack.FreePort(t)
	s := Start(t, Config{Port: port, Workers: 2, Site: fmt.Sprintf(`server {
    listen 127.0.0.1:%d;
    location / { return 200 "from nginx"; }
}
`, port)})
	resp, err := testhttp.Client.Get(s.URL + "/x")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK || string(body) != "from nginx" {
		t.Fatalf("GET %s/x: %d %q", s.URL, resp.StatusCode, body)
	}
	pids, err := s.Pids()
	if err != nil || len(pids) != 3 || pids[0] != s.Pid() {
		t.Fatalf("Pids() = %v, %v; want the master %d and 2 workers", pids, err, s.Pid())
	}
	s.Stop()
	if c, err := net.Dial("tcp", fmt.Sprintf("127.0.0.1:%d", port)); err == nil {
		c.Close()
		t.Fatal("nginx still listens after Stop")
	}
}

// TestStartRefusesBadConfig: a site nginx refuses fails the start with
// nginx's own message, not a time-out.
func TestStartRefusesBadConfig(t *testing.T) {
	Need(t)
	ft := &fakeT{TB: t}
	func() {
		defer func() { _ = recover() }()
		Start(ft, Config{Port: stack.FreePort(t), Site: "server { no_such_directive on; }\n"})
	}()
	if !ft.failed {
		t.Fatal("Start accepted a configuration nginx refuses")
	}
}

// fakeT records a fatal failure instead of ending the test.
type fakeT struct {
	testing.TB
	failed bool
}

func (f *fakeT) Fatalf(format string, args ...any) {
	f.failed = true
	f.TB.Logf("(expected) "+format, args...)
	panic("fatal")
}

func (f *fakeT) Fatal(args ...any) {
	f.failed = true
	panic("fatal")
}

func (f *fakeT) Helper() {}
