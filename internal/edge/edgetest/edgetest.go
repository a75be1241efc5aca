// Package edgetest is the contract test suite of internal/edge: every
// listener bffgate runs (the issuer, the gateway, the demo API) passes it
// over real TCP, so that a listener that does not go through edge.New, or
// answers its errors with the bytes it was sent, fails.
package edgetest

import (
	"bufio"
	"bytes"
	"compress/gzip"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
)

// Secrets sent by the suite's malformed requests: none may come back in a
// response or reach the log.
const (
	CookieSecret = "cookieSECRETvalue42"
	ForgedBearer = "forgedBEARERtoken42"
)

// Listener is one listener under test.
type Listener struct {
	// Addr is its host:port on loopback.
	Addr string
	// Log returns what its logger wrote so far.
	Log func() string
	// BodyPath is a POST endpoint that reads an
	// application/x-www-form-urlencoded body ("/token").
	BodyPath string
	// BodyContentType is the body's type there; the form type when "".
	BodyContentType string
	// Header is added to the body requests (credentials the endpoint
	// checks only after reading the body, or before it).
	Header http.Header
	// WantCode is the "error" member of the JSON 415 answer.
	WantCode string
	// Paths are GET paths the metrics run mixes with POSTs to BodyPath.
	Paths []string
	// Metrics is the path of /metrics ("" skips the metrics test).
	Metrics string
}

// Run runs the suite against l. It runs its subtests one after the other
// and should not run in parallel with other tests: the bomb case measures
// the process's allocations.
func Run(t *testing.T, l Listener) {
	t.Run("Framing", func(t *testing.T) { testFraming(t, l) })
	t.Run("NoBytesReflected", func(t *testing.T) { testNoBytesReflected(t, l) })
	t.Run("UnreadBodyIsNotARequest", func(t *testing.T) { testUnreadBody(t, l) })
	t.Run("CompressedBody", func(t *testing.T) { testCompressed(t, l) })
	if l.Metrics != "" {
		t.Run("MetricsUnderMixedLoad", func(t *testing.T) { testMetrics(t, l) })
	}
}

// Response is a raw exchange's outcome.
type Response struct {
	Status int
	Header http.Header
	Body   string
	// Raw is every byte the server sent.
	Raw string
	// Closed is true when the server closed the connection after the
	// answer (read returned EOF or a reset, not a timeout).
	Closed bool
}

// Exchange writes raw to addr and reads one response and then whether the
// connection closes (within a second).
func Exchange(t testing.TB, addr, raw string) Response {
	t.Helper()
	conn, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	_ = conn.SetDeadline(time.Now().Add(5 * time.Second))
	if _, err := io.WriteString(conn, raw); err != nil {
		t.Fatalf("write: %v", err)
	}
	var all bytes.Buffer
	br := bufio.NewReader(io.TeeReader(conn, &all))
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		t.Fatalf("no HTTP response (%v); the server sent %q", err, all.String())
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	r := Response{Status: resp.StatusCode, Header: resp.Header, Body: string(body)}
	_ = conn.SetReadDeadline(time.Now().Add(time.Second))
	_, err = br.ReadByte()
	var ne net.Error
	r.Closed = err != nil && !(errors.As(err, &ne) && ne.Timeout())
	r.Raw = all.String()
	return r
}

// LogBuffer is a logger's output that tests read while it is written.
type LogBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *LogBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

// String returns everything written so far.
func (b *LogBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

func (l Listener) contentType() string {
	if l.BodyContentType != "" {
		return l.BodyContentType
	}
	return "application/x-www-form-urlencoded"
}

func (l Listener) head(extra string) string {
	var b strings.Builder
	fmt.Fprintf(&b, "POST %s HTTP/1.1\r\nHost: %s\r\nContent-Type: %s\r\n", l.BodyPath, l.Addr, l.contentType())
	for k, vs := range l.Header {
		for _, v := range vs {
			fmt.Fprintf(&b, "%s: %s\r\n", k, v)
		}
	}
	b.WriteString(extra)
	return b.String()
}

// testFraming: ambiguous framing is 400 and the connection closed (RFC
// 9112 §6.1, §6.3, §5.2), whatever the endpoint.
func testFraming(t *testing.T, l Listener) {
	body := "a=1"
	chunked := fmt.Sprintf("%x\r\n%s\r\n0\r\n\r\n", len(body), body)
	cases := []struct{ name, raw string }{
		{"te_then_cl", l.head("Transfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\n") + chunked},
		{"cl_then_te", l.head("Content-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n") + chunked},
		{"te_twice", l.head("Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n") + chunked},
		{"te_identity", l.head("Transfer-Encoding: identity\r\nContent-Length: 3\r\n\r\n") + body},
		{"obs_fold_space", l.head("X-Folded: a\r\n b\r\nContent-Length: 3\r\n\r\n") + body},
		{"obs_fold_tab", l.head("X-Folded: a\r\n\tb\r\nContent-Length: 3\r\n\r\n") + body},
		// A field name is a token (RFC 9110 §5.1); a server behind that
		// drops the space would read another field.
		{"space_in_name", l.head("Content Length: 3\r\nContent-Length: 3\r\n\r\n") + body},
		{"space_in_trailer_name", l.head("Transfer-Encoding: chunked\r\n\r\n") + "3\r\na=1\r\n0\r\nX Bearer " + ForgedBearer + ": y\r\n\r\n"},
		{"get_te_and_cl", fmt.Sprintf("GET %s HTTP/1.1\r\nHost: %s\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n", firstPath(l), l.Addr) + chunked},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			r := Exchange(t, l.Addr, tc.raw)
			if r.Status != http.StatusBadRequest {
				t.Errorf("status %d, want 400; body %s", r.Status, clip(r.Body))
			}
			if !r.Closed {
				t.Errorf("the connection stayed open after the answer to ambiguous framing")
			}
		})
	}
}

// testUnreadBody: a body sent to an endpoint that does not read it (a GET)
// is not read as the next request on the connection, as it was where
// fasthttp streams bodies (the gateway): the answer is the only one.
func testUnreadBody(t *testing.T, l Listener) {
	hidden := fmt.Sprintf("GET %s HTTP/1.1\r\nHost: %s\r\n\r\n", firstPath(l), l.Addr)
	raw := fmt.Sprintf("GET %s HTTP/1.1\r\nHost: %s\r\nTransfer-Encoding: chunked\r\n\r\n%x\r\n%s\r\n0\r\n\r\n", firstPath(l), l.Addr, len(hidden), hidden)
	r := Exchange(t, l.Addr, raw)
	if n := strings.Count(r.Raw, "HTTP/1.1 "); n != 1 {
		t.Fatalf("one request got %d answers: its body was read as further requests: %s", n, clip(r.Raw))
	}
}

func firstPath(l Listener) string {
	if len(l.Paths) > 0 {
		return l.Paths[0]
	}
	return l.BodyPath
}

// testNoBytesReflected: requests fasthttp fails to parse are answered (and
// logged) by kind; the cookie and the forged Authorization they carry
// never come back nor reach the log.
func testNoBytesReflected(t *testing.T, l Listener) {
	cookie := "Cookie: sid=" + CookieSecret + "\r\n"
	cases := []struct {
		name, raw string
		status    int
	}{
		{"declared_forbidden_trailer", l.head(cookie+"Trailer: Authorization\r\nTransfer-Encoding: chunked\r\n\r\n") +
			"3\r\na=1\r\n0\r\nAuthorization: Bearer " + ForgedBearer + "\r\n\r\n", 400},
		{"forbidden_trailer", l.head(cookie+"Transfer-Encoding: chunked\r\n\r\n") +
			"3\r\na=1\r\n0\r\nAuthorization: Bearer " + ForgedBearer + "\r\n\r\n", 400},
		{"control_byte_in_cookie", l.head("Cookie: sid="+CookieSecret+"\x01x\r\nContent-Length: 3\r\n\r\n") + "a=1", 400},
		{"bad_chunk_size", l.head(cookie+"Transfer-Encoding: chunked\r\n\r\n") + "zz\r\n" + ForgedBearer + "\r\n0\r\n\r\n", 400},
		{"bad_request_line", "PO\x01ST /" + ForgedBearer + " HTTP/1.1\r\nHost: x\r\n" + cookie + "\r\n", 400},
		{"bad_content_length", l.head(cookie+"Content-Length: 3x"+ForgedBearer+"\r\n\r\n") + "a=1", 400},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			before := len(l.Log())
			r := Exchange(t, l.Addr, tc.raw)
			if r.Status != tc.status {
				t.Errorf("status %d, want %d; body %s", r.Status, tc.status, clip(r.Body))
			}
			for _, secret := range []string{CookieSecret, ForgedBearer} {
				if Reflects(r.Raw, secret) {
					t.Errorf("the response reflects a request byte (%s): %s", secret, clip(r.Raw))
				}
			}
			time.Sleep(50 * time.Millisecond) // the connection's log line follows the answer
			logged := l.Log()[before:]
			for _, secret := range []string{CookieSecret, ForgedBearer} {
				if Reflects(logged, secret) {
					t.Errorf("the log shows a request byte (%s): %s", secret, clip(logged))
				}
			}
		})
	}
}

// Reflects reports whether text holds secret in any letter case
// (fasthttp normalizes header names it quotes).
func Reflects(text, secret string) bool {
	return strings.Contains(strings.ToLower(text), strings.ToLower(secret))
}

var bomb = sync.OnceValue(func() []byte {
	// 128 MiB of zeros, gzipped twice: a few hundred bytes on the wire.
	var inner bytes.Buffer
	zw, _ := gzip.NewWriterLevel(&inner, gzip.BestCompression)
	zero := make([]byte, 1<<20)
	for range 128 {
		_, _ = zw.Write(zero)
	}
	_ = zw.Close()
	var outer bytes.Buffer
	zw, _ = gzip.NewWriterLevel(&outer, gzip.BestCompression)
	_, _ = zw.Write(inner.Bytes())
	_ = zw.Close()
	return outer.Bytes()
})

// testCompressed: a compressed body is 415 JSON, and is not inflated: a
// gzip-in-gzip bomb of 256 MiB allocates next to nothing.
func testCompressed(t *testing.T, l Listener) {
	var plain bytes.Buffer
	zw := gzip.NewWriter(&plain)
	_, _ = io.WriteString(zw, "grant_type=client_credentials")
	_ = zw.Close()
	cases := []struct {
		name, encoding string
		body           []byte
	}{
		{"gzip", "gzip", plain.Bytes()},
		{"br", "br", []byte{0x0b, 0x02, 0x80, 0x61, 0x03}},
		{"deflate_after_identity", "identity, deflate", []byte{0x4b, 0x04, 0x00}},
		{"gzip_bomb", "gzip, gzip", bomb()},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			var ms runtime.MemStats
			runtime.GC()
			runtime.ReadMemStats(&ms)
			before := ms.TotalAlloc
			raw := l.head(fmt.Sprintf("Content-Encoding: %s\r\nContent-Length: %d\r\n\r\n", tc.encoding, len(tc.body))) + string(tc.body)
			r := Exchange(t, l.Addr, raw)
			runtime.ReadMemStats(&ms)
			if grew := ms.TotalAlloc - before; grew > 32<<20 {
				t.Errorf("a %d-byte compressed body made the process allocate %d MiB: it was inflated", len(tc.body), grew>>20)
			}
			if r.Status != http.StatusUnsupportedMediaType {
				t.Fatalf("status %d, want 415; body %s", r.Status, clip(r.Body))
			}
			if ct := r.Header.Get("Content-Type"); !strings.HasPrefix(ct, "application/json") {
				t.Errorf("Content-Type %q, want JSON", ct)
			}
			if want := fmt.Sprintf(`"error":%q`, l.WantCode); !strings.Contains(r.Body, want) {
				t.Errorf("body %s lacks %s", clip(r.Body), want)
			}
		})
	}
}

// testMetrics runs mixed methods and paths in parallel over keep-alive
// connections, then checks every series /metrics serves: fasthttp reuses
// the buffers behind c.Method() and c.Path(), and a label that pointed
// into them would read "GETT" after a POST, or break /metrics (500) once
// two series collide.
func testMetrics(t *testing.T, l Listener) {
	paths := append([]string{l.BodyPath}, l.Paths...)
	methods := []string{http.MethodGet, http.MethodPost, http.MethodDelete, http.MethodPut, http.MethodOptions, http.MethodPatch}
	client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 4}, Timeout: 10 * time.Second}
	defer client.CloseIdleConnections()
	var wg sync.WaitGroup
	for w := range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range 60 {
				m := methods[(w+i)%len(methods)]
				p := paths[(w*7+i)%len(paths)]
				var body io.Reader
				if m != http.MethodGet {
					body = strings.NewReader("a=" + strings.Repeat("x", i))
				}
				req, _ := http.NewRequest(m, "http://"+l.Addr+p+fmt.Sprintf("?n=%d", i), body)
				req.Header.Set("Content-Type", l.contentType())
				resp, err := client.Do(req)
				if err != nil {
					t.Errorf("%s %s: %v", m, p, err)
					return
				}
				_, _ = io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
			}
		}()
	}
	wg.Wait()
	resp, err := client.Get("http://" + l.Addr + l.Metrics)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	text, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("/metrics answered %d after mixed load: %s", resp.StatusCode, clip(string(text)))
	}
	p := expfmt.NewTextParser(model.UTF8Validation)
	families, err := p.TextToMetricFamilies(bytes.NewReader(text))
	if err != nil {
		t.Fatalf("/metrics is not valid exposition text: %v", err)
	}
	known := map[string]bool{"GET": true, "HEAD": true, "POST": true, "PUT": true, "PATCH": true, "DELETE": true,
		"OPTIONS": true, "CONNECT": true, "TRACE": true, "other": true}
	seen := map[string]bool{}
	n := 0
	for _, name := range []string{"bffgate_http_requests_total", "bffgate_http_request_duration_seconds"} {
		mf := families[name]
		if mf == nil {
			t.Fatalf("/metrics has no %s", name)
		}
		for _, m := range mf.GetMetric() {
			labels := map[string]string{}
			for _, lp := range m.GetLabel() {
				labels[lp.GetName()] = lp.GetValue()
			}
			n++
			key := fmt.Sprint(name, labels)
			if seen[key] {
				t.Errorf("two series with the same labels: %s", key)
			}
			seen[key] = true
			if !known[labels["method"]] {
				t.Errorf("%s has method=%q: a label pointing into a reused request buffer", name, labels["method"])
			}
			if r := labels["route"]; strings.Contains(r, "?") || strings.Contains(r, "n=") {
				t.Errorf("%s has route=%q: a raw path", name, r)
			}
		}
	}
	if n == 0 {
		t.Fatal("no request series after the load")
	}
}

func clip(s string) string {
	if len(s) > 400 {
		return s[:400] + "..."
	}
	return s
}
