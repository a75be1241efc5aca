package browser

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/bffgate/bffgate/e2e/peers"
)

// TestProviderLoginInBrowser logs in through oidc-provider's devInteractions
// pages in chromium and lands on the client's redirect_uri with a code: the
// path the gateway's browser tests take, proved here before the gateway
// exists. openid-client builds the request and exchanges the code.
func TestProviderLoginInBrowser(t *testing.T) {
	codes := make(chan string, 1)
	client := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		select {
		case codes <- r.URL.String():
		default:
		}
		fmt.Fprint(w, `<!DOCTYPE html><p id="landed">back at the client</p>`)
	}))
	t.Cleanup(client.Close)
	redirect := client.URL + "/callback"
	const secret = "browser-test-secret-0123456789-abcdef"
	p := peers.StartProvider(t, peers.ProviderOptions{Clients: []peers.Client{{
		ID: "spa-gw", Secret: secret, RedirectURIs: []string{redirect},
	}}})
	rp := peers.StartRP(t, peers.RPOptions{Issuer: p.Issuer, ClientID: "spa-gw", ClientSecret: secret, RedirectURI: redirect})
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	ar, err := rp.Authorize(ctx, "", nil)
	if err != nil {
		t.Fatal(err)
	}

	b := New(t)
	b.Navigate(ar.URL)
	b.WaitVisible(`input[name=login]`)
	b.SetValue(`input[name=login]`, "grace")
	b.SetValue(`input[name=password]`, "pw")
	b.Click(`button[type=submit]`)
	b.WaitFor(`document.querySelector('input[name=prompt]') && document.querySelector('input[name=prompt]').value === 'consent'`)
	b.Screenshot("consent")
	b.Click(`button[type=submit]`)
	landed := b.WaitURL(redirect)
	b.WaitVisible("#landed")
	if !strings.Contains(landed, "code=") {
		t.Fatalf("landed at %s without a code", landed)
	}
	tok, err := rp.Callback(ctx, landed, ar.State)
	if err != nil {
		t.Fatal(err)
	}
	if tok.IDTokenClaims["sub"] != "grace" {
		t.Errorf("ID token sub = %v", tok.IDTokenClaims["sub"])
	}
	// The provider's pages loaded nothing from outside loopback (the
	// Google Fonts import of devInteractions is stripped).
	for _, r := range b.Responses() {
		if !strings.HasPrefix(r.URL, "http://127.0.0.1:") && r.URL != "" {
			t.Errorf("browser fetched %s", r.URL)
		}
	}
}
