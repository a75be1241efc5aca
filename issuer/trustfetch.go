package issuer

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync"
	"time"
)

// keyFetchTransport is the transport of the trusted issuers' key set
// fetches (go-oidc's RemoteKeySet in issuer/trust, which reads the body
// whole, lets net/http inflate it, and fetches again for every unknown
// kid). It holds them to the rules of the issuer's own key set fetches
// (jwksfetch.go): it asks for the identity encoding and refuses a
// compressed answer, reads at most maxKeySetBody, answers a fetch within
// keySetMinTTL of the last good one with that one's body (so a party
// presenting JWTs with random kids cannot make the issuer hammer a
// trusted issuer's jwks_url), and counts each real fetch in
// bffgate_issuer_key_set_fetches_total{kind="trusted_issuer"}.
type keyFetchTransport struct {
	base    http.RoundTripper
	now     func() time.Time
	observe func(error)

	mu   sync.Mutex
	last map[string]lastKeySet // by URL
}

type lastKeySet struct {
	body   []byte
	header http.Header
	at     time.Time
}

func (t *keyFetchTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	u := req.URL.String()
	t.mu.Lock()
	last, ok := t.last[u]
	t.mu.Unlock()
	if ok && t.now().Sub(last.at) < keySetMinTTL {
		return t.answer(req, last), nil
	}
	resp, err := t.fetch(req)
	t.observe(err)
	if err != nil {
		return nil, err
	}
	t.mu.Lock()
	if t.last == nil {
		t.last = map[string]lastKeySet{}
	}
	ks := lastKeySet{body: resp.body, header: resp.Header.Clone(), at: t.now()}
	t.last[u] = ks
	t.mu.Unlock()
	return t.answer(req, ks), nil
}

// fetched is a 200 answer and its whole body.
type fetched struct {
	*http.Response
	body []byte
}

func (t *keyFetchTransport) fetch(req *http.Request) (fetched, error) {
	req = req.Clone(req.Context())
	// Set explicitly, the header also stops net/http's transparent gzip.
	req.Header.Set("Accept-Encoding", "identity")
	resp, err := t.base.RoundTrip(req)
	if err != nil {
		return fetched{}, err
	}
	if enc := resp.Header.Get("Content-Encoding"); enc != "" && !strings.EqualFold(enc, "identity") {
		resp.Body.Close()
		return fetched{}, fmt.Errorf("%s answered with Content-Encoding %q; compressed key sets are not read", req.URL.Redacted(), enc)
	}
	if resp.StatusCode != http.StatusOK {
		resp.Body.Close()
		return fetched{}, fmt.Errorf("%s answered %d", req.URL.Redacted(), resp.StatusCode)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, maxKeySetBody+1))
	if err != nil {
		return fetched{}, fmt.Errorf("%s: reading the key set: %w", req.URL.Redacted(), err)
	}
	if len(body) > maxKeySetBody {
		return fetched{}, fmt.Errorf("%s: %w (%d bytes)", req.URL.Redacted(), errKeySetTooLarge, maxKeySetBody)
	}
	return fetched{Response: resp, body: body}, nil
}

// answer is a 200 response to req with the body of ks.
func (t *keyFetchTransport) answer(req *http.Request, ks lastKeySet) *http.Response {
	return &http.Response{
		Status: "200 OK", StatusCode: http.StatusOK, Proto: "HTTP/1.1", ProtoMajor: 1, ProtoMinor: 1,
		Header: ks.header.Clone(), Body: io.NopCloser(bytes.NewReader(ks.body)),
		ContentLength: int64(len(ks.body)), Request: req,
	}
}

// errKeySetTooLarge: a key set body past maxKeySetBody.
var errKeySetTooLarge = errors.New("the key set is larger than the issuer reads")

// trustClient is Config.HTTPClient with keyFetchTransport, for the
// trusted issuers' key sets.
func (s *Server) trustClient() *http.Client {
	hc := *s.cfg.HTTPClient
	base := hc.Transport
	if base == nil {
		base = http.DefaultTransport
	}
	m := s.ag.metrics.keyFetches
	hc.Transport = &keyFetchTransport{base: base, now: s.now, observe: func(err error) {
		result := "ok"
		if err != nil {
			result = "error"
		}
		m.WithLabelValues("trusted_issuer", result).Inc()
	}}
	return &hc
}
