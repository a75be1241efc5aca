package faults

import (
	"context"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/bffgate/bffgate/e2e/issuerclient"
)

// testClient is the confidential client the issuer tests register.
var testClient = issuerclient.Config{
	ClientID:     "e2e-faults",
	ClientSecret: "e2e-faults-secret-0123456789abcdef",
	RedirectURI:  "https://client.e2e.test/callback",
}

// get fetches a URL without cookies.
func get(ctx context.Context, rawURL string) (issuerclient.Answer, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, rawURL, nil)
	if err != nil {
		return issuerclient.Answer{}, err
	}
	resp, err := (&http.Client{Timeout: 10 * time.Second}).Do(req)
	if err != nil {
		return issuerclient.Answer{}, err
	}
	defer resp.Body.Close()
	var b strings.Builder
	buf := make([]byte, 32<<10)
	for b.Len() < 1<<20 {
		n, err := resp.Body.Read(buf)
		b.Write(buf[:n])
		if err != nil {
			break
		}
	}
	return issuerclient.Answer{Status: resp.StatusCode, Header: resp.Header, Body: b.String()}, nil
}

// waitFor polls cond for up to 30 s.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within 30 s", what)
		}
		time.Sleep(50 * time.Millisecond)
	}
}
