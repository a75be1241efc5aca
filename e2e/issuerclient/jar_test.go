package issuerclient

import (
	"net/http"
	"slices"
	"strings"
	"sync"
	"testing"
)

// cookieHeader returns the Set-Cookie headers of cookies.
func cookieHeader(cookies ...*http.Cookie) http.Header {
	h := http.Header{}
	for _, c := range cookies {
		h.Add("Set-Cookie", c.String())
	}
	return h
}

// sortedHeader makes a Cookie header comparable (the jar's order is a
// map's).
func sortedHeader(s string) string {
	parts := strings.Split(s, "; ")
	slices.Sort(parts)
	return strings.Join(parts, "; ")
}

func TestJar(t *testing.T) {
	t.Parallel()
	var j Jar
	if got := j.Header(); got != "" {
		t.Fatalf("empty jar's header = %q, want empty", got)
	}
	j.Update(cookieHeader(
		&http.Cookie{Name: "__Host-bff", Value: "s0", Path: "/", Secure: true},
		&http.Cookie{Name: "__Host-bff.1", Value: "s1", Path: "/", Secure: true},
		&http.Cookie{Name: "__Host-sso", Value: "x", Path: "/", Secure: true},
		&http.Cookie{Name: "gone", Value: "g", Path: "/"},
		&http.Cookie{Name: "cleared", Value: "c", Path: "/"},
	))
	if got, want := sortedHeader(j.Header()), "__Host-bff.1=s1; __Host-bff=s0; __Host-sso=x; cleared=c; gone=g"; got != want {
		t.Fatalf("header = %q, want %q", got, want)
	}
	// A later response clears some (Max-Age=0 is MaxAge -1 in net/http,
	// an empty value) and replaces one.
	j.Update(cookieHeader(
		&http.Cookie{Name: "gone", Path: "/", MaxAge: -1},
		&http.Cookie{Name: "cleared", Value: "", Path: "/"},
		&http.Cookie{Name: "__Host-sso", Value: "y", Path: "/", Secure: true},
	))
	if got, want := sortedHeader(j.Header()), "__Host-bff.1=s1; __Host-bff=s0; __Host-sso=y"; got != want {
		t.Fatalf("header after clearing = %q, want %q", got, want)
	}
	session := j.HeaderWhere(func(name string) bool {
		return name == "__Host-bff" || strings.HasPrefix(name, "__Host-bff.")
	})
	if got, want := sortedHeader(session), "__Host-bff.1=s1; __Host-bff=s0"; got != want {
		t.Fatalf("session header = %q, want %q", got, want)
	}
	if got := j.HeaderWhere(func(string) bool { return false }); got != "" {
		t.Fatalf("header of no cookie = %q, want empty", got)
	}
}

// TestJarConcurrent updates and reads one jar from several goroutines
// (the race detector checks the locking).
func TestJarConcurrent(t *testing.T) {
	t.Parallel()
	var j Jar
	var wg sync.WaitGroup
	for i := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range 50 {
				j.Update(cookieHeader(&http.Cookie{Name: "c" + string(rune('a'+i)), Value: "v", Path: "/"}))
				_ = j.Header()
			}
		}()
	}
	wg.Wait()
	if got := len(strings.Split(j.Header(), "; ")); got != 8 {
		t.Fatalf("%d cookies after concurrent updates, want 8", got)
	}
}
