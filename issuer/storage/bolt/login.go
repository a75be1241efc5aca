package bolt

import (
	"context"
	"time"

	"github.com/bffgate/bffgate/issuer/storage"
)

// loginRecord is the stored state of one login-throttle key.
type loginRecord struct {
	Count       int       `json:"c"`
	Start       time.Time `json:"s"` // start of the counting window; zero: none open
	Lockouts    int       `json:"k"`
	LockedUntil time.Time `json:"l"`
	Expires     time.Time `json:"e"` // the state is forgotten from then on
}

func (r loginRecord) state() storage.LoginFailures {
	return storage.LoginFailures{Count: r.Count, Lockouts: r.Lockouts, LockedUntil: r.LockedUntil.UTC()}
}

// loginRecord reads key's record as of now: the zero record when it is
// missing or expired (Purge may not have removed it yet).
func (t *txn) loginRecord(key string, now time.Time) (loginRecord, bool, error) {
	var r loginRecord
	ok, err := getJSON(t.b.loginFailures, []byte(key), &r)
	if err != nil || !ok {
		return loginRecord{}, false, err
	}
	if expired(r.Expires, now) {
		return loginRecord{}, true, nil
	}
	return r, true, nil
}

// LoginFailures returns the state of key at now.
func (s *Store) LoginFailures(ctx context.Context, key string, now time.Time) (storage.LoginFailures, error) {
	if err := storage.CheckLoginKey(key); err != nil {
		return storage.LoginFailures{}, err
	}
	var out storage.LoginFailures
	err := s.view(ctx, "login failures", func(t *txn) error {
		r, _, err := t.loginRecord(key, now)
		out = r.state()
		return err
	})
	return out, err
}

// RecordLoginFailure counts one failure against key in one write
// transaction; bbolt's single writer makes concurrent calls count one by
// one.
func (s *Store) RecordLoginFailure(ctx context.Context, key string, now time.Time, p storage.LoginPolicy) (storage.LoginFailures, error) {
	if err := storage.CheckLoginKey(key); err != nil {
		return storage.LoginFailures{}, err
	}
	if err := p.Validate(); err != nil {
		return storage.LoginFailures{}, err
	}
	var out storage.LoginFailures
	err := s.update(ctx, "record login failure", func(t *txn) error {
		old, _, err := t.loginRecord(key, now)
		if err != nil {
			return err
		}
		if now.Before(old.LockedUntil) {
			out = old.state()
			return nil
		}
		r := old
		if r.Start.IsZero() || !now.Before(r.Start.Add(p.Window)) {
			r.Count, r.Start = 0, now
		}
		r.Count++
		started := false
		if r.Count >= p.MaxFailures {
			r.LockedUntil = now.Add(p.LockoutAfter(r.Lockouts))
			r.Lockouts++
			r.Count, r.Start = 0, time.Time{}
			started = true
		}
		r.Expires = r.LockedUntil.Add(p.Window)
		if !r.Start.IsZero() && r.Start.Add(p.Window).After(r.Expires) {
			r.Expires = r.Start.Add(p.Window)
		}
		if err := t.putLoginRecord(key, r); err != nil {
			return err
		}
		out = r.state()
		out.Started = started
		return nil
	})
	return out, err
}

// ResetLoginFailures deletes key's record unless key is locked at now.
func (s *Store) ResetLoginFailures(ctx context.Context, key string, now time.Time) (storage.LoginFailures, error) {
	if err := storage.CheckLoginKey(key); err != nil {
		return storage.LoginFailures{}, err
	}
	var out storage.LoginFailures
	err := s.update(ctx, "reset login failures", func(t *txn) error {
		r, found, err := t.loginRecord(key, now)
		if err != nil || !found {
			return err
		}
		if now.Before(r.LockedUntil) {
			out = r.state()
			return nil
		}
		return t.deleteLoginRecord(key)
	})
	return out, err
}

// putLoginRecord stores r under key and moves its expiry-index entry.
func (t *txn) putLoginRecord(key string, r loginRecord) error {
	if err := t.deleteLoginRecord(key); err != nil {
		return err
	}
	if err := t.putJSON(t.b.loginFailures, []byte(key), r); err != nil {
		return err
	}
	return t.b.expiry.Put(expiryKey(r.Expires, kindLoginFailures, key), nil)
}

// deleteLoginRecord removes key's record and its expiry-index entry; a
// missing record is no error.
func (t *txn) deleteLoginRecord(key string) error {
	var old loginRecord
	ok, err := getJSON(t.b.loginFailures, []byte(key), &old)
	if err != nil || !ok {
		return err
	}
	if err := t.b.expiry.Delete(expiryKey(old.Expires, kindLoginFailures, key)); err != nil {
		return err
	}
	return t.b.loginFailures.Delete([]byte(key))
}
