// Package bodylimit bounds the response bodies an HTTP client reads.
// Libraries that fetch discovery documents and key sets (go-oidc) read a
// response whole; a provider or trusted issuer that answers without end
// must not exhaust the process's memory. Written here because
// net/http has a limit for request bodies (http.MaxBytesReader) but none
// for a client's responses, and the wrapper is a dozen lines.
package bodylimit

import (
	"fmt"
	"io"
	"net/http"
)

// Client returns a copy of c (nil: a client with http.DefaultTransport)
// whose response bodies fail once they pass max bytes; c itself, which
// the caller may use elsewhere, is not changed.
func Client(c *http.Client, max int64) *http.Client {
	var lc http.Client
	if c != nil {
		lc = *c
	}
	base := lc.Transport
	if base == nil {
		base = http.DefaultTransport
	}
	lc.Transport = transport{base: base, max: max}
	return &lc
}

type transport struct {
	base http.RoundTripper
	max  int64
}

func (t transport) RoundTrip(req *http.Request) (*http.Response, error) {
	resp, err := t.base.RoundTrip(req)
	if err != nil {
		return nil, err
	}
	resp.Body = &body{ReadCloser: resp.Body, left: t.max, max: t.max, host: req.URL.Host}
	return resp, nil
}

// body reads at most max bytes, then fails: a cut body would fail to
// decode anyway, but with a less helpful error.
type body struct {
	io.ReadCloser
	left, max int64
	host      string
}

func (b *body) Read(p []byte) (int, error) {
	if b.left <= 0 {
		var one [1]byte
		if n, err := b.ReadCloser.Read(one[:]); n == 0 {
			return 0, err
		}
		return 0, fmt.Errorf("the response of %s is larger than %d bytes", b.host, b.max)
	}
	if int64(len(p)) > b.left {
		p = p[:b.left]
	}
	n, err := b.ReadCloser.Read(p)
	b.left -= int64(n)
	return n, err
}
