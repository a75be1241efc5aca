package issuer

import (
	"errors"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/go-jose/go-jose/v4"
)

func TestCacheTTL(t *testing.T) {
	t.Parallel()
	now := time.Date(2026, 12, 7, 12, 0, 0, 0, time.UTC)
	date := now.Format(http.TimeFormat)
	for _, tc := range []struct {
		name string
		h    http.Header
		want time.Duration
	}{
		{"none", http.Header{}, keySetDefaultTTL},
		{"max-age", http.Header{"Cache-Control": {"public, max-age=600"}}, 10 * time.Minute},
		{"max-age quoted", http.Header{"Cache-Control": {`max-age="120"`}}, 2 * time.Minute},
		{"no-store", http.Header{"Cache-Control": {"no-store"}}, 0},
		{"no-cache beats max-age", http.Header{"Cache-Control": {"no-cache, max-age=600"}}, 0},
		{"huge max-age is capped", http.Header{"Cache-Control": {"max-age=99999999999999"}}, keySetMaxTTL},
		{"bad max-age falls to Expires", http.Header{"Cache-Control": {"max-age=x"}, "Date": {date}, "Expires": {now.Add(time.Hour).Format(http.TimeFormat)}}, time.Hour},
		{"Expires relative to Date", http.Header{"Date": {date}, "Expires": {now.Add(3 * time.Minute).Format(http.TimeFormat)}}, 3 * time.Minute},
		{"invalid Expires is expired", http.Header{"Expires": {"0"}}, 0},
		{"Expires in the past", http.Header{"Date": {date}, "Expires": {now.Add(-time.Hour).Format(http.TimeFormat)}}, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := cacheTTL(tc.h, now); got != tc.want {
				t.Fatalf("cacheTTL = %s, want %s", got, tc.want)
			}
		})
	}
}

func TestRemoteKeySetRefuses(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name    string
		handler http.HandlerFunc
		want    string
	}{
		{"status", func(w http.ResponseWriter, r *http.Request) { http.Error(w, "no", http.StatusBadGateway) }, "502"},
		{"content type", func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Content-Type", "text/html")
			w.Write([]byte("<html>"))
		}, "not JSON"},
		{"compressed", func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Content-Type", "application/json")
			w.Header().Set("Content-Encoding", "gzip")
			w.Write([]byte("\x1f\x8b"))
		}, "compressed"},
		{"too large", func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Content-Type", "application/json")
			w.Write([]byte(`{"keys":[` + strings.Repeat(" ", maxKeySetBody) + `]}`))
		}, "larger than"},
		{"not a key set", func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Content-Type", "application/json")
			w.Write([]byte(`{"keys":[]}`))
		}, "no keys"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			srv := httptest.NewServer(tc.handler)
			defer srv.Close()
			r := &remoteKeySet{url: srv.URL, what: "test", client: srv.Client(), log: slog.New(slog.DiscardHandler),
				parse: func(b []byte) ([]jose.JSONWebKey, time.Duration, error) {
					k, err := parsePublicJWKS(b)
					return k, 0, err
				}}
			_, err := r.Keys(time.Now(), "")
			if !errors.Is(err, errKeySetFetch) || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("Keys = %v; want a fetch error naming %q", err, tc.want)
			}
		})
	}
}
