package bff

import (
	"sync"

	"github.com/bffgate/bffgate/bff/authz"
	"github.com/bffgate/bffgate/session"
)

// claimsCache keeps the decoded claims of recent sessions, keyed by their
// JSON as stored: a session's claims change only at login (and a refresh
// with userinfo does not touch them), so the decoding a rule or identity
// headers need per request is done once per session and instance. The
// maps it returns are shared: readers never modify them (authz.Decide
// and the identity headers only read). It holds at most max entries and
// starts over when full.
type claimsCache struct {
	mu  sync.RWMutex
	m   map[string]map[string]any
	max int
}

func newClaimsCache(max int) *claimsCache {
	return &claimsCache{m: make(map[string]map[string]any), max: max}
}

// claims returns the claims s's rules read from src: the session's (from
// the cache), or a token's (decoded each time: tokens change at every
// refresh).
func (cc *claimsCache) claims(src authz.Source, s *session.Session) (map[string]any, error) {
	if src != authz.SourceSession && src != authz.SourceUserinfo {
		return sessionClaims(src, s)
	}
	cc.mu.RLock()
	m, ok := cc.m[string(s.Claims)]
	cc.mu.RUnlock()
	if ok {
		return m, nil
	}
	m, err := authz.Claims(s.Claims)
	if err != nil {
		return nil, err
	}
	cc.mu.Lock()
	if len(cc.m) >= cc.max {
		clear(cc.m)
	}
	cc.m[string(s.Claims)] = m
	cc.mu.Unlock()
	return m, nil
}
