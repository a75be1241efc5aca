package issuer

import (
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
)

// keyFetchTransport is the transport of the trusted issuers' key set
// fetches (go-oidc's RemoteKeySet in issuer/trust, which reads the body
// whole and lets net/http inflate it): it asks for the identity encoding,
// refuses a compressed answer, bounds the body at maxKeySetBody, and
// counts each fetch in bffgate_issuer_key_set_fetches_total{kind=
// "trusted_issuer"}, as the issuer's own key set fetches do (jwksfetch.go).
type keyFetchTransport struct {
	base    http.RoundTripper
	observe func(error)
}

func (t *keyFetchTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	req = req.Clone(req.Context())
	// Set explicitly, the header also stops net/http's transparent gzip.
	req.Header.Set("Accept-Encoding", "identity")
	resp, err := t.base.RoundTrip(req)
	if err != nil {
		t.observe(err)
		return nil, err
	}
	if enc := resp.Header.Get("Content-Encoding"); enc != "" && !strings.EqualFold(enc, "identity") {
		resp.Body.Close()
		err := fmt.Errorf("%s answered with Content-Encoding %q; compressed key sets are not read", req.URL.Redacted(), enc)
		t.observe(err)
		return nil, err
	}
	if resp.StatusCode != http.StatusOK {
		t.observe(fmt.Errorf("status %d", resp.StatusCode))
		return resp, nil
	}
	resp.Body = &boundedBody{r: resp.Body, left: maxKeySetBody, observe: t.observe}
	return resp, nil
}

// trustClient is Config.HTTPClient with keyFetchTransport, for the
// trusted issuers' key sets.
func (s *Server) trustClient() *http.Client {
	hc := *s.cfg.HTTPClient
	base := hc.Transport
	if base == nil {
		base = http.DefaultTransport
	}
	m := s.ag.metrics.keyFetches
	hc.Transport = &keyFetchTransport{base: base, observe: func(err error) {
		result := "ok"
		if err != nil {
			result = "error"
		}
		m.WithLabelValues("trusted_issuer", result).Inc()
	}}
	return &hc
}

// errKeySetTooLarge: a key set body past maxKeySetBody.
var errKeySetTooLarge = errors.New("the key set is larger than the issuer reads")

// boundedBody reads at most left bytes, then fails; it reports the fetch's
// result once, at EOF or at the failure.
type boundedBody struct {
	r        io.ReadCloser
	left     int64
	observe  func(error)
	observed bool
}

func (b *boundedBody) Read(p []byte) (int, error) {
	if b.left < 0 {
		return 0, errKeySetTooLarge
	}
	if int64(len(p)) > b.left+1 {
		p = p[:b.left+1]
	}
	n, err := b.r.Read(p)
	b.left -= int64(n)
	switch {
	case b.left < 0:
		b.report(errKeySetTooLarge)
		return n, errKeySetTooLarge
	case errors.Is(err, io.EOF):
		b.report(nil)
	case err != nil:
		b.report(err)
	}
	return n, err
}

func (b *boundedBody) report(err error) {
	if !b.observed {
		b.observed = true
		b.observe(err)
	}
}

func (b *boundedBody) Close() error { return b.r.Close() }
