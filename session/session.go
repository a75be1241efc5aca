// Package session holds the gateway's session model and the Store contract
// that every session store (cookie, bbolt, redis) satisfies.
//
// A session is what the browser never sees: the tokens the gateway obtained
// for a user, the ID-token claims it answers /bff/user with, and the times
// that bound its life. The browser holds only an opaque handle in an
// HttpOnly cookie; what the handle is depends on the store (the whole
// session sealed by securecookie for the cookie store, a ticket of random id
// plus per-session key for the server-side stores).
//
// # Lifetimes
//
// A session ends at the earlier of its idle deadline (LastSeen+IdleTimeout,
// sliding) and its absolute deadline (AbsoluteExpiry, fixed at creation and
// never later than the refresh token's expiry). An expired session is gone:
// stores answer ErrNotFound for it and never revive it.
package session

import (
	"context"
	"time"
)

// Session is one logged-in browser session at the gateway.
//
// Stores copy what they keep; a *Session returned by a Store is the
// caller's to change.
type Session struct {
	// ID identifies the session inside a server-side store. The cookie
	// store leaves it empty. It is never sent to the browser as such.
	ID string

	// Subject and SID are the ID token's sub and sid claims, indexed by the
	// server-side stores for back-channel logout.
	Subject string
	SID     string
	// Issuer is the provider's issuer identifier (iss of the ID token).
	Issuer string

	// Claims is the JSON object of user claims answered by /bff/user: the ID
	// token's claims merged with userinfo when configured.
	Claims []byte

	IDToken      string
	AccessToken  string
	RefreshToken string
	TokenType    string
	// AccessExpiry is when AccessToken expires (zero: unknown).
	AccessExpiry time.Time

	Created  time.Time
	LastSeen time.Time
	// IdleTimeout is the sliding idle lifetime; zero means no idle limit.
	IdleTimeout time.Duration
	// AbsoluteExpiry is the hard end of the session.
	AbsoluteExpiry time.Time

	// Frontend names the gateway frontend the session belongs to ("" for
	// the classic single frontend). The gateway refuses a session of
	// another frontend as no session, whatever store it comes from.
	Frontend string

	// Version counts updates; stores increase it on every Update so that a
	// lock holder can fence stale writers.
	Version uint64
}

// ExpiresAt is when the session ends if it is not used again: the earlier
// of the idle and the absolute deadline.
func (s *Session) ExpiresAt() time.Time {
	end := s.AbsoluteExpiry
	if s.IdleTimeout > 0 {
		idle := s.LastSeen.Add(s.IdleTimeout)
		if end.IsZero() || idle.Before(end) {
			end = idle
		}
	}
	return end
}

// Expired reports whether the session has ended at now.
func (s *Session) Expired(now time.Time) bool {
	end := s.ExpiresAt()
	return !end.IsZero() && !now.Before(end)
}

// Store keeps sessions. A handle is the opaque string that the session
// cookie carries; the gateway splits it over numbered cookies when it is
// long, so a handle may be a few kilobytes (cookie store) or a short ticket.
//
// Implementations are safe for concurrent use.
type Store interface {
	// Create stores a new session under a fresh identity (never one the
	// browser supplied: no fixation) and returns its handle.
	Create(ctx context.Context, s *Session) (handle string, err error)

	// Get returns the session that handle names. A handle that is
	// malformed, fails authentication, names no session, or names an
	// expired or ended session yields an error wrapping ErrNotFound.
	Get(ctx context.Context, handle string) (*Session, error)

	// Update atomically reads the session, applies fn, and stores the
	// result, returning the handle that now names it (the cookie store
	// returns a new one; server-side stores return handle unchanged). If
	// fn returns an error nothing is stored and Update returns it.
	Update(ctx context.Context, handle string, fn func(*Session) error) (string, error)

	// Delete ends the session. Deleting an unknown session is no error.
	Delete(ctx context.Context, handle string) error

	// EndBySID and EndBySubject end every session carrying the given sid
	// or sub (OIDC Back-Channel Logout) and report how many they ended
	// (the cookie store, which cannot count, reports 0 and remembers the
	// ending so that later Gets refuse those sessions).
	EndBySID(ctx context.Context, sid string) (int, error)
	EndBySubject(ctx context.Context, sub string) (int, error)

	// Ping reports whether the store's backend is reachable (/readyz).
	Ping(ctx context.Context) error
}
