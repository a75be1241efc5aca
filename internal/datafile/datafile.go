// Package datafile opens bffgate's one bbolt data file and owns its
// layout: the bucket names of each user of the file (the issuer's state,
// the gateway's sessions and their ended records, the readiness probes)
// and the encodings of the keys they sort and scan (index keys, expiry
// keys, times). The issuer's storage engine (issuer/storage/bolt) and the
// gateway's session store (session/bolt) both build on it, so neither
// reaches into the other to find the file or its buckets.
//
// # Layout
//
// The issuer's buckets start with a prefix ("issuer." by default, Issuer);
// the sessions' start with "sessions/". Names and encodings are those of
// the first release and never change: a data file written by any earlier
// bffgate opens unchanged, and fixture tests in both stores keep it so.
//
//	issuer.keys            "keys" -> JSON []Key
//	issuer.secrets         name -> raw bytes
//	issuer.codes           code hash -> JSON
//	issuer.grants          grant id -> JSON
//	issuer.refresh         jti -> JSON (the allowlist)
//	issuer.grant_refresh   IssuerIndexKey(grant id, jti) -> empty
//	issuer.sid_grants      IssuerIndexKey(login session id, grant id) -> empty
//	issuer.denylist        kind NUL id -> Nanos(until), 8 bytes BE
//	issuer.denylog         sequence (8 BE) -> Nanos(until) | kind NUL id
//	issuer.login_sessions  id -> JSON
//	issuer.login_failures  throttle key -> JSON
//	issuer.expiry          IssuerExpiryKey(at, kind, id) -> empty
//	issuer.health          the issuer's readiness probe
//	sessions/records       ticket id (16 bytes) -> sealed record
//	sessions/by_sid        SessionIndexKey(sid, id) -> empty
//	sessions/by_sub        SessionIndexKey(subject, id) -> empty
//	sessions/expiry        SessionExpiryKey(at, id) -> empty
//	sessions/ended_sid     sid or deleted-session key -> Nanos(until)
//	sessions/ended_sub     subject -> Nanos(since) | Nanos(until)
//	sessions/health, sessions/ended_health  readiness probes
//	sessions@<frontend>/...  the same buckets for each named frontend of
//	                       gateway.frontends (Sessions)
//
// The two index encodings differ (a 2-byte length prefix for the issuer's,
// a uvarint for the sessions'): each is what its first release wrote.
//
// # Faults
//
// Open sets bbolt's Options.Timeout (bbolt's zero waits forever for the
// file lock) so that a second bffgate on one data directory fails at once
// with a clear error. Faults of the open file later on (a full disk, a
// read-only remount, an I/O error) are told apart by internal/boltfault;
// Fault wraps them with the file's path, for the operator.
package datafile

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"time"

	bbolt "go.etcd.io/bbolt"
	berrors "go.etcd.io/bbolt/errors"

	"github.com/bffgate/bffgate/internal/boltfault"
)

// DefaultOpenTimeout is how long Open waits for the file lock when the
// caller passes no timeout.
const DefaultOpenTimeout = 5 * time.Second

// Open opens (creating when missing) the bbolt file at path with mode
// 0600, creating its parent directory with mode 0700. timeout bounds the
// wait for the file's lock (zero means DefaultOpenTimeout; bbolt itself
// would wait forever), so a second bffgate on the same data directory fails
// with a clear error instead of hanging. The caller closes the file.
func Open(path string, timeout time.Duration) (*bbolt.DB, error) {
	if path == "" {
		return nil, errors.New("datafile: data file path is empty")
	}
	if timeout <= 0 {
		timeout = DefaultOpenTimeout
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return nil, fmt.Errorf("datafile: create data directory of %s: %w", path, err)
	}
	db, err := bbolt.Open(path, 0o600, &bbolt.Options{Timeout: timeout})
	switch {
	case errors.Is(err, berrors.ErrTimeout):
		return nil, fmt.Errorf("datafile: data file %s is in use by another bffgate process; stop it or choose another data directory: %w", path, err)
	case err != nil:
		return nil, fmt.Errorf("datafile: open data file %s: %w", path, err)
	}
	return db, nil
}

// Fault wraps err, an error of a transaction on db, with op and the data
// file's path; a fault of the file (boltfault.Is: a full disk, a read-only
// filesystem, an I/O error, a closed file) also matches unavailable, the
// caller's sentinel that its users answer with 503. Other errors (a
// caller's, a missing bucket) are wrapped with op only. nil stays nil.
func Fault(db *bbolt.DB, op string, unavailable, err error) error {
	switch {
	case err == nil:
		return nil
	case boltfault.Is(err):
		return fmt.Errorf("%s in data file %s: %w: %w", op, db.Path(), unavailable, err)
	}
	return fmt.Errorf("%s: %w", op, err)
}
