package issuer

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"sync/atomic"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/bundle/spiffebundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/bffgate/bffgate/internal/testhttp"
)

// bundleJSON is a SPIFFE bundle of one fresh JWT authority kid with the
// refresh hint.
func bundleJSON(t *testing.T, kid string, hint time.Duration) []byte {
	t.Helper()
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	b := spiffebundle.FromJWTAuthorities(spiffeid.RequireTrustDomainFromString("example.org"), map[string]crypto.PublicKey{kid: k.Public()})
	b.SetRefreshHint(hint)
	raw, err := b.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	return raw
}

// TestBundleRefreshHint: a bundle file and a bundle endpoint are read
// again once their spiffe_refresh_hint has passed, not before.
func TestBundleRefreshHint(t *testing.T) {
	td := spiffeid.RequireTrustDomainFromString("example.org")
	kidOf := func(src keySource, now time.Time) string {
		keys, err := src.Keys(now, "")
		if err != nil || len(keys) != 1 {
			t.Fatalf("Keys = %v, %v", keys, err)
		}
		return keys[0].KeyID
	}
	t.Run("file", func(t *testing.T) {
		path := filepath.Join(t.TempDir(), "bundle.json")
		os.WriteFile(path, bundleJSON(t, "a", 2*time.Minute), 0o600)
		b, err := newSPIFFEBundles(SPIFFE{TrustDomains: []TrustDomain{{Name: "example.org", BundleFile: path}}}, testhttp.Client, slog.New(slog.DiscardHandler))
		if err != nil {
			t.Fatal(err)
		}
		now := time.Now()
		os.WriteFile(path, bundleJSON(t, "b", 2*time.Minute), 0o600)
		if got := kidOf(b.domains[td], now.Add(time.Minute)); got != "a" {
			t.Fatalf("before the hint: kid %q, want the first bundle's", got)
		}
		if got := kidOf(b.domains[td], now.Add(3*time.Minute)); got != "b" {
			t.Fatalf("after the hint: kid %q, want the rewritten bundle's", got)
		}
	})
	t.Run("endpoint", func(t *testing.T) {
		var n atomic.Int32
		srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Content-Type", "application/json")
			w.Header().Set("Cache-Control", "max-age=86400") // the hint wins
			w.Write(bundleJSON(t, string(rune('a'+n.Add(1)-1)), 3*time.Minute))
		}))
		defer srv.Close()
		b, err := newSPIFFEBundles(SPIFFE{TrustDomains: []TrustDomain{{Name: "example.org", BundleEndpoint: srv.URL}}}, srv.Client(), slog.New(slog.DiscardHandler))
		if err != nil {
			t.Fatal(err)
		}
		now := time.Now()
		if got := kidOf(b.domains[td], now); got != "a" {
			t.Fatalf("first fetch: kid %q", got)
		}
		if got := kidOf(b.domains[td], now.Add(2*time.Minute)); got != "a" || n.Load() != 1 {
			t.Fatalf("before the hint: kid %q after %d fetches; want the cached bundle", got, n.Load())
		}
		if got := kidOf(b.domains[td], now.Add(4*time.Minute)); got != "b" || n.Load() != 2 {
			t.Fatalf("after the hint: kid %q after %d fetches; want a refetch", got, n.Load())
		}
	})
}
