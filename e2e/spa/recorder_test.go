package spa

import (
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"strings"
	"sync"
	"testing"
)

// recorder is the upstream the gateway's /api/ route points at: a reverse
// proxy to the demo API that notes every request it forwards, bearer
// token included. It is how the test learns the access tokens the gateway
// holds, from the side the browser never sees.
type recorder struct {
	URL string

	mu     sync.Mutex
	target *url.URL // the demo API, known once the stack runs
	seen   []seenRequest
}

// seenRequest is one request the gateway sent upstream.
type seenRequest struct {
	Method, Path string
	// Bearer is the access token of the Authorization header ("" if none).
	Bearer string
	// Cookies are the names of the cookies the gateway let through.
	Cookies []string
}

func newRecorder(t *testing.T) *recorder {
	t.Helper()
	r := &recorder{}
	rp := &httputil.ReverseProxy{
		Rewrite: func(pr *httputil.ProxyRequest) {
			r.mu.Lock()
			target := r.target
			r.mu.Unlock()
			pr.SetURL(target)
			pr.Out.Host = target.Host
		},
	}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		s := seenRequest{Method: req.Method, Path: req.URL.Path}
		if tok, ok := strings.CutPrefix(req.Header.Get("Authorization"), "Bearer "); ok {
			s.Bearer = tok
		}
		for _, c := range req.Cookies() {
			s.Cookies = append(s.Cookies, c.Name)
		}
		r.mu.Lock()
		r.seen = append(r.seen, s)
		ready := r.target != nil
		r.mu.Unlock()
		if !ready {
			http.Error(w, "recorder: no upstream yet", http.StatusServiceUnavailable)
			return
		}
		rp.ServeHTTP(w, req)
	}))
	t.Cleanup(srv.Close)
	r.URL = srv.URL
	return r
}

// forwardTo sets the demo API the recorder forwards to.
func (r *recorder) forwardTo(t *testing.T, rawURL string) {
	t.Helper()
	u, err := url.Parse(rawURL)
	if err != nil {
		t.Fatalf("demo API URL %q: %v", rawURL, err)
	}
	r.mu.Lock()
	r.target = u
	r.mu.Unlock()
}

// requests returns a copy of everything recorded so far.
func (r *recorder) requests() []seenRequest {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]seenRequest(nil), r.seen...)
}

// count is the number of requests recorded so far.
func (r *recorder) count() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.seen)
}

// tokens returns the distinct bearer tokens recorded, in order of first use.
func (r *recorder) tokens() []string {
	var out []string
	seen := map[string]bool{}
	for _, s := range r.requests() {
		if s.Bearer != "" && !seen[s.Bearer] {
			seen[s.Bearer] = true
			out = append(out, s.Bearer)
		}
	}
	return out
}

// last returns the last request recorded for method and path.
func (r *recorder) last(method, path string) (seenRequest, bool) {
	reqs := r.requests()
	for i := len(reqs) - 1; i >= 0; i-- {
		if reqs[i].Method == method && reqs[i].Path == path {
			return reqs[i], true
		}
	}
	return seenRequest{}, false
}
