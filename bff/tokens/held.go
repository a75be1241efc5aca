package tokens

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/bffgate/bffgate/session"
)

// heldMax bounds the sessions whose refreshed tokens wait in memory for
// the session store (see held). Past it the Manager refuses to refresh
// other sessions until a save succeeds: it rotates no refresh token it
// could neither save nor hold.
const heldMax = 10000

// held keeps the tokens of refreshes that the session store could not save
// (a full disk, Redis down), per session, until a save succeeds.
//
// They must not be dropped: the provider has rotated the refresh token the
// store still holds, so the next refresh with it would be reuse (RFC 9700
// §4.14.2), which revokes the grant and ends the session. The grace record
// covers that only for grace_window, and an outage of the store lasts
// longer. So while the process lives, a session whose store copy is behind
// is served from here (its requests keep working with the new access token,
// refreshed again from the new refresh token when due), every request
// tries the save again, and the first that succeeds forgets the entry.
//
// An entry is named by the session and the refresh token the store holds
// for it, which is what a request reads; it lasts until the session's
// absolute expiry. Safe for concurrent use; the zero value is ready.
type held struct {
	mu sync.Mutex
	m  map[string]heldEntry
	// n is len(m), read without the lock on every request: nearly always
	// zero, and then no key is computed.
	n atomic.Int64
}

type heldEntry struct {
	rec   *graceRecord
	until time.Time
}

// heldKey names the held tokens of s, read from the store.
func heldKey(s *session.Session) string {
	return flightKey(s) + "/" + shortHash(s.RefreshToken)
}

func (h *held) get(key string, now time.Time) *graceRecord {
	h.mu.Lock()
	defer h.mu.Unlock()
	e, ok := h.m[key]
	if !ok {
		return nil
	}
	if !e.until.IsZero() && !now.Before(e.until) {
		delete(h.m, key)
		h.n.Store(int64(len(h.m)))
		return nil
	}
	return e.rec
}

// register adds the gauge bffgate_token_refresh_held_sessions to reg (nil:
// none): how many sessions live on tokens only this process holds, which
// a restart before the store writes again would end.
func (h *held) register(reg prometheus.Registerer) error {
	if reg == nil {
		return nil
	}
	_, err := register(reg, prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "bffgate_token_refresh_held_sessions",
		Help: "Sessions whose refreshed tokens the session store could not save, held in this process's memory until a save succeeds (a restart meanwhile ends them).",
	}, func() float64 { return float64(h.n.Load()) }))
	return err
}

// any reports whether any tokens are held.
func (h *held) any() bool { return h.n.Load() > 0 }

// put holds rec for key until until; it reports false when heldMax entries
// are held already (expired ones are dropped first).
func (h *held) put(key string, rec *graceRecord, until, now time.Time) bool {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.m == nil {
		h.m = map[string]heldEntry{}
	}
	if _, ok := h.m[key]; !ok && len(h.m) >= heldMax {
		for k, e := range h.m {
			if !e.until.IsZero() && !now.Before(e.until) {
				delete(h.m, k)
			}
		}
		h.n.Store(int64(len(h.m)))
		if len(h.m) >= heldMax {
			return false
		}
	}
	h.m[key] = heldEntry{rec: rec, until: until}
	h.n.Store(int64(len(h.m)))
	return true
}

func (h *held) forget(key string) {
	h.mu.Lock()
	defer h.mu.Unlock()
	delete(h.m, key)
	h.n.Store(int64(len(h.m)))
}

// full reports whether no other session's tokens can be held.
func (h *held) full() bool {
	h.mu.Lock()
	defer h.mu.Unlock()
	return len(h.m) >= heldMax
}

// storeFault reports whether a save failed because the store could not
// write (its outage), not because of the session: then the tokens are
// held.
func storeFault(err error) bool {
	return errors.Is(err, session.ErrUnavailable) || errors.Is(err, context.DeadlineExceeded)
}

// withTokens returns a copy of s carrying rec's tokens.
func withTokens(s *session.Session, rec *graceRecord) *session.Session {
	c := *s
	c.AccessToken = rec.AccessToken
	c.RefreshToken = rec.RefreshToken
	c.AccessExpiry = rec.AccessExpiry
	if rec.TokenType != "" {
		c.TokenType = rec.TokenType
	}
	if rec.IDToken != "" {
		c.IDToken = rec.IDToken
	}
	return &c
}
