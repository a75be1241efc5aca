package storage

import (
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"maps"
	"time"
)

// The state of third-party clients (issue 18): dynamically registered
// clients (RFC 7591) and the consents users gave to third-party clients.
// Both live in the store so that every instance sharing it knows them;
// both expire (a registration when unused, a consent after its lifetime)
// and the purge removes them.

// ErrExists means a record with that key is already stored.
var ErrExists = errors.New("storage: already exists")

// ClientStore is the state of dynamically registered clients and of
// consents; Store includes it, and Rules implements it on every engine.
type ClientStore interface {
	// CreateRegistration stores a new registration; ErrExists when its
	// ClientID is taken.
	CreateRegistration(ctx context.Context, r Registration) error
	// Registration returns the registration of client id: ErrNotFound
	// when there is none, ErrExpired when it expired (not yet purged).
	Registration(ctx context.Context, id string, now time.Time) (Registration, error)
	// TouchRegistration records a use at now and moves the expiry to
	// expires (ErrNotFound when the registration is gone).
	TouchRegistration(ctx context.Context, id string, now, expires time.Time) error
	// DeleteRegistration removes it; a missing one is no error.
	DeleteRegistration(ctx context.Context, id string) error

	// Consent returns what subject consented to for client id (the zero
	// Consent, no error, when nothing).
	Consent(ctx context.Context, subject, clientID string, now time.Time) (Consent, error)
	// AddConsent adds the scopes granted for resource ("" for none) to
	// what subject consented to for client id, valid until expires.
	AddConsent(ctx context.Context, subject, clientID, resource string, scopes []string, now, expires time.Time) error
	// RevokeConsent forgets every consent subject gave client id.
	RevokeConsent(ctx context.Context, subject, clientID string) error
}

// Registration is one dynamically registered client (RFC 7591 §3.2.1).
type Registration struct {
	ClientID string
	// Metadata is the client metadata as registered (JSON object).
	Metadata []byte
	// TokenHash is the SHA-256 of the registration access token (RFC
	// 7592 §3); the token itself is never stored.
	TokenHash []byte
	Created   time.Time
	LastUsed  time.Time
	// ExpiresAt is when the registration lapses unless used again.
	ExpiresAt time.Time
}

// Consent is what one user consented to for one client: per resource
// ("" for tokens without a resource indicator), the scopes granted.
type Consent struct {
	Scopes    map[string][]string `json:"scopes,omitempty"`
	ExpiresAt time.Time           `json:"expires_at"`
}

// Covers reports whether the consent includes every scope in scopes for
// resource.
func (c Consent) Covers(resource string, scopes []string) bool {
	granted, ok := c.Scopes[resource]
	if !ok {
		return false
	}
	for _, s := range scopes {
		found := false
		for _, g := range granted {
			if g == s {
				found = true
				break
			}
		}
		if !found {
			return false
		}
	}
	return true
}

var _ ClientStore = (*Rules)(nil)

// maxClientIDLen bounds a stored client id (a metadata URL is at most
// 2048 bytes; a registered id is short).
const maxClientIDLen = 2048

// consentKey is the key of subject's consents for client id: both
// base64url (so neither can hold the separator).
func consentKey(subject, clientID string) string {
	return base64.RawURLEncoding.EncodeToString([]byte(subject)) + "." + base64.RawURLEncoding.EncodeToString([]byte(clientID))
}

func checkClientID(id string) error {
	if id == "" || len(id) > maxClientIDLen {
		return fmt.Errorf("storage: client id is %d bytes; it must be 1 to %d", len(id), maxClientIDLen)
	}
	return nil
}

// CreateRegistration implements ClientStore.
func (r *Rules) CreateRegistration(ctx context.Context, reg Registration) error {
	if err := checkClientID(reg.ClientID); err != nil {
		return err
	}
	if reg.ExpiresAt.IsZero() {
		return errors.New("storage: create registration: ExpiresAt is zero")
	}
	return r.update(ctx, "create registration", func(t *rtx) error {
		v, err := t.Get(BucketRegistrations, reg.ClientID)
		if err != nil {
			return err
		}
		if v != nil {
			return ErrExists
		}
		if err := t.putJSON(BucketRegistrations, reg.ClientID, reg); err != nil {
			return err
		}
		return t.Expire(ExpireRegistration, reg.ClientID, reg.ExpiresAt)
	})
}

// Registration implements ClientStore.
func (r *Rules) Registration(ctx context.Context, id string, now time.Time) (Registration, error) {
	if err := checkClientID(id); err != nil {
		return Registration{}, err
	}
	var out Registration
	err := r.view(ctx, "read registration", func(t *rtx) error {
		out = Registration{}
		found, err := t.getJSON(BucketRegistrations, id, &out)
		switch {
		case err != nil:
			return err
		case !found:
			return ErrNotFound
		case expired(out.ExpiresAt, now):
			return ErrExpired
		}
		return nil
	})
	return out, err
}

// TouchRegistration implements ClientStore.
func (r *Rules) TouchRegistration(ctx context.Context, id string, now, expires time.Time) error {
	if err := checkClientID(id); err != nil {
		return err
	}
	return r.update(ctx, "touch registration", func(t *rtx) error {
		var reg Registration
		found, err := t.getJSON(BucketRegistrations, id, &reg)
		if err != nil {
			return err
		}
		if !found {
			return ErrNotFound
		}
		if err := t.Unexpire(ExpireRegistration, id, reg.ExpiresAt); err != nil {
			return err
		}
		reg.LastUsed, reg.ExpiresAt = now.UTC(), expires.UTC()
		if err := t.putJSON(BucketRegistrations, id, reg); err != nil {
			return err
		}
		return t.Expire(ExpireRegistration, id, reg.ExpiresAt)
	})
}

// DeleteRegistration implements ClientStore.
func (r *Rules) DeleteRegistration(ctx context.Context, id string) error {
	if err := checkClientID(id); err != nil {
		return err
	}
	return r.update(ctx, "delete registration", func(t *rtx) error {
		var reg Registration
		found, err := t.getJSON(BucketRegistrations, id, &reg)
		if err != nil || !found {
			return err
		}
		if err := t.Unexpire(ExpireRegistration, id, reg.ExpiresAt); err != nil {
			return err
		}
		return t.Delete(BucketRegistrations, id)
	})
}

// Consent implements ClientStore.
func (r *Rules) Consent(ctx context.Context, subject, clientID string, now time.Time) (Consent, error) {
	if err := checkClientID(clientID); err != nil {
		return Consent{}, err
	}
	var out Consent
	err := r.view(ctx, "read consent", func(t *rtx) error {
		out = Consent{}
		found, err := t.getJSON(BucketConsents, consentKey(subject, clientID), &out)
		if err != nil {
			return err
		}
		if !found || expired(out.ExpiresAt, now) {
			out = Consent{}
		}
		return nil
	})
	return out, err
}

// AddConsent implements ClientStore.
func (r *Rules) AddConsent(ctx context.Context, subject, clientID, resource string, scopes []string, now, expires time.Time) error {
	if err := checkClientID(clientID); err != nil {
		return err
	}
	if !expires.After(now) {
		return errors.New("storage: add consent: expires is not after now")
	}
	key := consentKey(subject, clientID)
	return r.update(ctx, "add consent", func(t *rtx) error {
		var c Consent
		found, err := t.getJSON(BucketConsents, key, &c)
		if err != nil {
			return err
		}
		if found {
			if err := t.Unexpire(ExpireConsent, key, c.ExpiresAt); err != nil {
				return err
			}
			if expired(c.ExpiresAt, now) {
				c = Consent{}
			}
		}
		next := Consent{Scopes: maps.Clone(c.Scopes), ExpiresAt: expires.UTC()}
		if next.Scopes == nil {
			next.Scopes = map[string][]string{}
		}
		merged := append([]string(nil), next.Scopes[resource]...)
		for _, s := range scopes {
			if !containsString(merged, s) {
				merged = append(merged, s)
			}
		}
		next.Scopes[resource] = merged
		if err := t.putJSON(BucketConsents, key, next); err != nil {
			return err
		}
		return t.Expire(ExpireConsent, key, next.ExpiresAt)
	})
}

// RevokeConsent implements ClientStore.
func (r *Rules) RevokeConsent(ctx context.Context, subject, clientID string) error {
	if err := checkClientID(clientID); err != nil {
		return err
	}
	key := consentKey(subject, clientID)
	return r.update(ctx, "revoke consent", func(t *rtx) error {
		var c Consent
		found, err := t.getJSON(BucketConsents, key, &c)
		if err != nil || !found {
			return err
		}
		if err := t.Unexpire(ExpireConsent, key, c.ExpiresAt); err != nil {
			return err
		}
		return t.Delete(BucketConsents, key)
	})
}

func containsString(ss []string, s string) bool {
	for _, x := range ss {
		if x == s {
			return true
		}
	}
	return false
}
