// Package upstreamtest runs a real Node http server for the tests of the
// gateway's upstream clients (bff/proxy, bff/spa). Node's server closes
// idle kept-alive connections after server.keepAliveTimeout (5 s by
// default, as in Vite's dev server), which is what those clients must
// live with; a Go httptest server does not.
//
// The server answers every request with JSON naming the method, the URL,
// the connection's number and the body it read, after ?delay=MS
// milliseconds when asked; it reports every connection's opening and
// closing, and who closed it, on its standard output, which the Node
// value reads.
package upstreamtest

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// script is the server: node script.mjs KEEPALIVE_MS (0: Node's default).
const script = `import http from 'node:http';
const keepAlive = Number(process.argv[2]);
let conns = 0;
const server = http.createServer((req, res) => {
  const chunks = [];
  req.on('data', (c) => chunks.push(c));
  req.on('end', () => {
    const delay = Number(new URL(req.url, 'http://x').searchParams.get('delay') || 0);
    setTimeout(() => {
      const body = JSON.stringify({ method: req.method, url: req.url, conn: req.socket.bffConn, body: Buffer.concat(chunks).toString() });
      res.writeHead(200, { 'Content-Type': 'application/json', 'Content-Length': Buffer.byteLength(body) });
      res.end(body);
    }, delay);
  });
});
if (keepAlive > 0) server.keepAliveTimeout = keepAlive;
server.on('connection', (s) => {
  const id = ++conns;
  s.bffConn = id;
  let peerEnded = false;
  s.on('end', () => { peerEnded = true; });
  s.on('close', () => { console.log('close ' + id + ' ' + (peerEnded ? 'client' : 'server')); });
  console.log('open ' + id);
});
server.listen(0, '127.0.0.1', () => { console.log('listening ' + server.address().port); });
`

// Node is a running Node http server.
type Node struct {
	// URL is http://127.0.0.1:PORT.
	URL string

	mu     sync.Mutex
	opened int
	closed map[string]int // "client" or "server": who closed
}

// StartNode runs the server with keepAlive as server.keepAliveTimeout
// (zero keeps Node's default, 5 s); it is stopped when the test ends. It
// skips the test when node is not installed, unless BFFGATE_E2E_REQUIRE
// is set.
func StartNode(t testing.TB, keepAlive time.Duration) *Node {
	t.Helper()
	bin, err := exec.LookPath("node")
	if err != nil {
		if os.Getenv("BFFGATE_E2E_REQUIRE") != "" {
			t.Fatalf("node is not installed (BFFGATE_E2E_REQUIRE is set): %v", err)
		}
		t.Skip("node is not installed: the keep-alive tests run a real Node http server")
	}
	path := filepath.Join(t.TempDir(), "server.mjs")
	if err := os.WriteFile(path, []byte(script), 0o600); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cmd := exec.CommandContext(ctx, bin, path, strconv.FormatInt(keepAlive.Milliseconds(), 10))
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	var stderr strings.Builder
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		cancel()
		t.Fatalf("start node: %v", err)
	}
	n := &Node{closed: map[string]int{}}
	ready := make(chan string, 1)
	done := make(chan struct{})
	go func() {
		defer close(done)
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			f := strings.Fields(sc.Text())
			switch {
			case len(f) == 2 && f[0] == "listening":
				ready <- f[1]
			case len(f) == 2 && f[0] == "open":
				n.mu.Lock()
				n.opened++
				n.mu.Unlock()
			case len(f) == 3 && f[0] == "close":
				n.mu.Lock()
				n.closed[f[2]]++
				n.mu.Unlock()
			}
		}
	}()
	t.Cleanup(func() {
		cancel()
		<-done
		_ = cmd.Wait()
	})
	select {
	case port := <-ready:
		n.URL = "http://127.0.0.1:" + port
	case <-done:
		t.Fatalf("node exited before listening: %s", stderr.String())
	case <-time.After(15 * time.Second):
		t.Fatalf("node did not listen within 15 s: %s", stderr.String())
	}
	return n
}

// Conns returns how many connections the server accepted, and how many
// of them were closed by the client and by the server.
func (n *Node) Conns() (opened, byClient, byServer int) {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.opened, n.closed["client"], n.closed["server"]
}

// String describes the connection counts for a failure message.
func (n *Node) String() string {
	o, c, s := n.Conns()
	return fmt.Sprintf("node server: %d connections, %d closed by the client, %d by the server", o, c, s)
}

// WaitAllClosed polls until every connection the server accepted is
// closed, or limit passes; it reports whether they all were.
func (n *Node) WaitAllClosed(limit time.Duration) bool {
	deadline := time.Now().Add(limit)
	for {
		o, c, s := n.Conns()
		if o == c+s {
			return true
		}
		if time.Now().After(deadline) {
			return false
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// ParallelGets sends n GETs at once with hc, the i-th to url(i) (which
// should ask the server for ?delay=100 so that the requests overlap and the
// client under test opens n connections), and fails unless all answer 200.
func ParallelGets(t testing.TB, hc *http.Client, n int, url func(i int) string) {
	t.Helper()
	var wg sync.WaitGroup
	errs := make(chan error, n)
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			res, err := hc.Get(url(i))
			if err != nil {
				errs <- err
				return
			}
			body, _ := io.ReadAll(io.LimitReader(res.Body, 64<<10))
			res.Body.Close()
			if res.StatusCode != http.StatusOK {
				errs <- fmt.Errorf("HTTP %d %s", res.StatusCode, body)
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatalf("parallel GET while opening connections: %v", err)
	}
}
