package storage

import (
	"context"
	"time"
)

// loginRecord is the stored state of one login-throttle key.
type loginRecord struct {
	Count       int       `json:"c"`
	Start       time.Time `json:"s"` // start of the counting window; zero: none open
	Lockouts    int       `json:"k"`
	LockedUntil time.Time `json:"l"`
	Expires     time.Time `json:"e"` // the state is forgotten from then on
}

func (r loginRecord) state() LoginFailures {
	return LoginFailures{Count: r.Count, Lockouts: r.Lockouts, LockedUntil: r.LockedUntil.UTC()}
}

// loginRecord reads key's record as of now: the zero record when it is
// missing or expired (Purge may not have removed it yet). found reports
// that a record is stored, expired or not.
func (t *rtx) loginRecord(key string, now time.Time) (rec loginRecord, found bool, err error) {
	var r loginRecord
	ok, err := t.getJSON(BucketLoginFailures, key, &r)
	if err != nil || !ok {
		return loginRecord{}, false, err
	}
	if expired(r.Expires, now) {
		return loginRecord{}, true, nil
	}
	return r, true, nil
}

// LoginFailures returns the state of key at now.
func (r *Rules) LoginFailures(ctx context.Context, key string, now time.Time) (LoginFailures, error) {
	if err := CheckLoginKey(key); err != nil {
		return LoginFailures{}, err
	}
	var out LoginFailures
	err := r.view(ctx, "login failures", func(t *rtx) error {
		rec, _, err := t.loginRecord(key, now)
		out = rec.state()
		return err
	})
	return out, err
}

// RecordLoginFailure counts one failure against key in one write
// transaction, so that concurrent calls count one by one.
func (r *Rules) RecordLoginFailure(ctx context.Context, key string, now time.Time, p LoginPolicy) (LoginFailures, error) {
	if err := CheckLoginKey(key); err != nil {
		return LoginFailures{}, err
	}
	if err := p.Validate(); err != nil {
		return LoginFailures{}, err
	}
	var out LoginFailures
	err := r.update(ctx, "record login failure", func(t *rtx) error {
		old, _, err := t.loginRecord(key, now)
		if err != nil {
			return err
		}
		if now.Before(old.LockedUntil) {
			out = old.state()
			return nil
		}
		rec := old
		if rec.Start.IsZero() || !now.Before(rec.Start.Add(p.Window)) {
			rec.Count, rec.Start = 0, now
		}
		rec.Count++
		started := false
		if rec.Count >= p.MaxFailures {
			rec.LockedUntil = now.Add(p.LockoutAfter(rec.Lockouts))
			rec.Lockouts++
			rec.Count, rec.Start = 0, time.Time{}
			started = true
		}
		rec.Expires = rec.LockedUntil.Add(p.Window)
		if !rec.Start.IsZero() && rec.Start.Add(p.Window).After(rec.Expires) {
			rec.Expires = rec.Start.Add(p.Window)
		}
		if err := t.putLoginRecord(key, rec); err != nil {
			return err
		}
		out = rec.state()
		out.Started = started
		return nil
	})
	return out, err
}

// ResetLoginFailures deletes key's record unless key is locked at now.
func (r *Rules) ResetLoginFailures(ctx context.Context, key string, now time.Time) (LoginFailures, error) {
	if err := CheckLoginKey(key); err != nil {
		return LoginFailures{}, err
	}
	var out LoginFailures
	err := r.update(ctx, "reset login failures", func(t *rtx) error {
		out = LoginFailures{}
		rec, found, err := t.loginRecord(key, now)
		if err != nil || !found {
			return err
		}
		if now.Before(rec.LockedUntil) {
			out = rec.state()
			return nil
		}
		return t.deleteLoginRecord(key)
	})
	return out, err
}

// putLoginRecord stores rec under key and moves its expiry-index entry.
func (t *rtx) putLoginRecord(key string, rec loginRecord) error {
	if err := t.deleteLoginRecord(key); err != nil {
		return err
	}
	if err := t.putJSON(BucketLoginFailures, key, rec); err != nil {
		return err
	}
	return t.Expire(ExpireLoginFailures, key, rec.Expires)
}

// deleteLoginRecord removes key's record and its expiry-index entry; a
// missing record is no error.
func (t *rtx) deleteLoginRecord(key string) error {
	var old loginRecord
	ok, err := t.getJSON(BucketLoginFailures, key, &old)
	if err != nil || !ok {
		return err
	}
	if err := t.Unexpire(ExpireLoginFailures, key, old.Expires); err != nil {
		return err
	}
	return t.Delete(BucketLoginFailures, key)
}
