package issuer

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"mime"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/go-jose/go-jose/v4"
	"golang.org/x/sync/singleflight"
)

// Bounds of a fetched JWK set or SPIFFE bundle.
const (
	// maxKeySetBody bounds the body read from a jwks_uri or a bundle
	// endpoint: a JWK set of a few dozen RSA keys fits in 64 KiB.
	maxKeySetBody = 256 << 10
	// keySetMinTTL is both the shortest cache lifetime a response's
	// headers can ask for and the least time between two fetches a
	// request can trigger (an unknown kid refetches at most once a
	// minute, as go-oidc and Keycloak do): a client presenting assertions
	// with random kids cannot make the issuer hammer its jwks_uri.
	keySetMinTTL = time.Minute
	// keySetMaxTTL caps what the headers can ask for, so that a rotated
	// key set is learnt within a day even from a server that announces
	// "max-age=31536000".
	keySetMaxTTL = 24 * time.Hour
	// keySetDefaultTTL is the lifetime of a response without cache headers.
	keySetDefaultTTL = 5 * time.Minute
	// keySetFetchTimeout bounds one fetch, whatever the HTTP client's own
	// timeout: a request waiting for it answers within this time.
	keySetFetchTimeout = 5 * time.Second
)

// errKeySetFetch wraps every failure to fetch a remote key set.
var errKeySetFetch = errors.New("fetch key set")

// remoteKeySet is a JWK set (or SPIFFE bundle) behind a URL, cached per the
// response's HTTP cache headers (Cache-Control max-age, Expires), bounded
// by keySetMinTTL and keySetMaxTTL. Concurrent fetches are merged into
// one. It is safe for concurrent use.
type remoteKeySet struct {
	url    string
	what   string // "jwks_uri of client \"x\"", for errors and logs
	client *http.Client
	log    *slog.Logger
	// parse turns a body into keys (a JWK set, a SPIFFE bundle); its
	// refresh is the TTL the body itself asks for (a bundle's
	// spiffe_refresh_hint), zero for none.
	parse func(body []byte) (keys []jose.JSONWebKey, refresh time.Duration, err error)

	// observe, when set, is told the result of each fetch (a metric).
	observe func(err error)

	sf singleflight.Group
	mu sync.Mutex
	// keys is the last good set (kept past expires when a refetch fails:
	// a short outage of the key server does not lock the client out).
	keys      []jose.JSONWebKey
	fetched   bool
	expires   time.Time // refetch from then on
	lastFetch time.Time // last attempt, successful or not
}

// Keys returns the cached keys, fetching first when the cache has expired
// (or was never filled), or when kid is not among them and the last fetch
// is at least keySetMinTTL old. A failed fetch returns the error only
// when no earlier set is cached; otherwise the stale set is used and the
// failure logged.
func (r *remoteKeySet) Keys(now time.Time, kid string) ([]jose.JSONWebKey, error) {
	r.mu.Lock()
	keys, fetched := r.keys, r.fetched
	fresh := fetched && now.Before(r.expires)
	mayRefetch := now.Sub(r.lastFetch) >= keySetMinTTL
	r.mu.Unlock()
	if fresh && (kid == "" || hasKid(keys, kid) || !mayRefetch) {
		return keys, nil
	}
	if fetched && !fresh && !mayRefetch {
		return keys, nil // the last attempt failed within the minute
	}
	v, err, _ := r.sf.Do("", func() (any, error) { return r.fetch(now) })
	if err != nil {
		if fetched {
			r.log.Warn("key set refetch failed; the cached keys stay in use", "source", r.what, "url", r.url, "err", err)
			return keys, nil
		}
		return nil, err
	}
	return v.([]jose.JSONWebKey), nil
}

func hasKid(keys []jose.JSONWebKey, kid string) bool {
	for _, k := range keys {
		if k.KeyID == kid {
			return true
		}
	}
	return false
}

// fetch gets and parses the key set, bounded by keySetFetchTimeout, and
// caches it.
func (r *remoteKeySet) fetch(now time.Time) ([]jose.JSONWebKey, error) {
	r.mu.Lock()
	r.lastFetch = now
	r.mu.Unlock()
	keys, ttl, err := r.get()
	if r.observe != nil {
		r.observe(err)
	}
	if err != nil {
		r.log.Error("key set fetch failed", "source", r.what, "url", r.url, "err", err)
		return nil, fmt.Errorf("%w: %s: %v", errKeySetFetch, r.what, err)
	}
	r.mu.Lock()
	r.keys, r.fetched, r.expires = keys, true, now.Add(ttl)
	r.mu.Unlock()
	r.log.Debug("key set fetched", "source", r.what, "url", r.url, "keys", len(keys), "ttl", ttl)
	return keys, nil
}

func (r *remoteKeySet) get() ([]jose.JSONWebKey, time.Duration, error) {
	ctx, cancel := context.WithTimeout(context.Background(), keySetFetchTimeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, r.url, nil)
	if err != nil {
		return nil, 0, err
	}
	req.Header.Set("Accept", "application/jwk-set+json, application/json")
	// Set explicitly, so that net/http does not ask for gzip and inflate
	// the answer itself: a compressed body is refused, never decoded.
	req.Header.Set("Accept-Encoding", "identity")
	resp, err := r.client.Do(req)
	if err != nil {
		if ctx.Err() != nil {
			return nil, 0, fmt.Errorf("no answer within %s", keySetFetchTimeout)
		}
		return nil, 0, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		io.Copy(io.Discard, io.LimitReader(resp.Body, 4<<10))
		return nil, 0, fmt.Errorf("answered %s", resp.Status)
	}
	if ct := resp.Header.Get("Content-Type"); ct != "" {
		if mt, _, err := mime.ParseMediaType(ct); err != nil || !strings.Contains(mt, "json") {
			return nil, 0, fmt.Errorf("answered with Content-Type %q, not JSON", ct)
		}
	}
	if enc := resp.Header.Get("Content-Encoding"); enc != "" && !strings.EqualFold(enc, "identity") {
		return nil, 0, fmt.Errorf("answered with Content-Encoding %q; compressed key sets are not read", enc)
	}
	body, err := io.ReadAll(io.LimitReader(resp.Body, maxKeySetBody+1))
	if err != nil {
		return nil, 0, fmt.Errorf("read the body: %v", err)
	}
	if len(body) > maxKeySetBody {
		return nil, 0, fmt.Errorf("the body is larger than %d bytes", maxKeySetBody)
	}
	keys, refresh, err := r.parse(body)
	if err != nil {
		return nil, 0, err
	}
	ttl := cacheTTL(resp.Header, time.Now())
	if refresh > 0 {
		ttl = refresh
	}
	return keys, min(max(ttl, keySetMinTTL), keySetMaxTTL), nil
}

// cacheTTL is how long a response may be cached per RFC 9111 §4.2.1:
// Cache-Control max-age (no-store and no-cache count as zero), else
// Expires minus Date, else keySetDefaultTTL.
func cacheTTL(h http.Header, now time.Time) time.Duration {
	if cc := h.Get("Cache-Control"); cc != "" {
		for _, d := range strings.Split(cc, ",") {
			name, val, _ := strings.Cut(strings.TrimSpace(d), "=")
			switch strings.ToLower(name) {
			case "no-store", "no-cache":
				return 0
			case "max-age":
				if n, err := strconv.ParseInt(strings.Trim(val, `"`), 10, 64); err == nil && n >= 0 {
					return time.Duration(min(n, int64(keySetMaxTTL/time.Second))) * time.Second
				}
			}
		}
	}
	if e := h.Get("Expires"); e != "" {
		exp, err := http.ParseTime(e)
		if err != nil {
			return 0 // RFC 9111 §5.3: an invalid Expires means already expired
		}
		date := now
		if d, err := http.ParseTime(h.Get("Date")); err == nil {
			date = d
		}
		return max(exp.Sub(date), 0)
	}
	return keySetDefaultTTL
}
