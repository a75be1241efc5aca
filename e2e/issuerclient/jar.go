package issuerclient

import (
	"net/http"
	"strings"
	"sync"
	"time"
)

// Jar keeps the cookies of one browser by name, for every port of one host:
// browsers do not separate cookies by port, and every process of a test
// runs on 127.0.0.1. Tests that drive a gateway and an issuer from one
// user therefore share a Jar. It is kept by hand rather than with
// net/http/cookiejar so that a test can pick cookies by name (a gateway's
// __Host-bff session chunks) and build a Cookie header of them alone.
//
// The zero value is an empty jar, ready to use; a Jar may be used from
// several goroutines at once.
type Jar struct {
	mu sync.Mutex
	m  map[string]string
}

// Update keeps the cookies the response header h sets, and forgets those
// it clears (Max-Age below zero, an expiry in the past, or an empty value).
func (j *Jar) Update(h http.Header) {
	j.mu.Lock()
	defer j.mu.Unlock()
	if j.m == nil {
		j.m = map[string]string{}
	}
	for _, c := range (&http.Response{Header: h}).Cookies() {
		if c.MaxAge < 0 || c.Value == "" || (!c.Expires.IsZero() && c.Expires.Before(time.Now())) {
			delete(j.m, c.Name)
			continue
		}
		j.m[c.Name] = c.Value
	}
}

// Header is the Cookie header of every cookie in the jar ("" when empty).
func (j *Jar) Header() string {
	return j.HeaderWhere(func(string) bool { return true })
}

// HeaderWhere is the Cookie header of the cookies whose name keep accepts
// ("" when none does).
func (j *Jar) HeaderWhere(keep func(name string) bool) string {
	j.mu.Lock()
	defer j.mu.Unlock()
	var parts []string
	for k, v := range j.m {
		if keep(k) {
			parts = append(parts, k+"="+v)
		}
	}
	return strings.Join(parts, "; ")
}
