// Package boltfault tells the faults of a bbolt data file from the answers
// of the stores built on it, and probes whether the file can be written.
//
// A store built on bbolt (the issuer's state, the gateway's sessions)
// answers a request from what the file holds: not found, expired, a
// conflict. Anything else that comes out of a transaction is a fault of
// the file, its filesystem or the disk under it: a full disk (ENOSPC, and
// EDQUOT for a quota), an I/O error (EIO), a filesystem remounted
// read-only (EROFS), a closed database, the file lock not taken in time.
// Is recognises them all, by kind rather than by a list of errnos that
// would miss the next one, so that each store maps them to its
// "unavailable" sentinel in one place and callers answer 503 (and
// temporarily_unavailable at the issuer), never 500.
//
// Probe is the readiness check of a data file: a tiny write transaction
// (what a read cannot tell: the file may be readable and not writable)
// and the free space of its filesystem. The free space matters because
// bbolt rewrites pages it has freed before it grows the file, so a small
// write can succeed on a full disk while the next larger one fails.
package boltfault

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"path/filepath"
	"sync"
	"syscall"
	"time"

	bbolt "go.etcd.io/bbolt"
	berrors "go.etcd.io/bbolt/errors"
)

// Is reports whether err, from a bbolt transaction or its commit, is a
// fault of the data file rather than an error of the caller's: any system
// call error (ENOSPC, EDQUOT, EIO, EROFS, ...), a failed file operation, a
// short write, and bbolt's own errors about the database's state (closed,
// read-only, lock timeout, a corrupt or unmappable file, the maximum size
// reached). bbolt's errors about a call (a missing bucket, a key too
// large) are the caller's and are not faults.
func Is(err error) bool {
	if err == nil {
		return false
	}
	var errno syscall.Errno
	var pe *fs.PathError
	switch {
	case errors.As(err, &errno), errors.As(err, &pe),
		errors.Is(err, io.ErrShortWrite), errors.Is(err, io.ErrUnexpectedEOF):
		return true
	}
	for _, e := range []error{
		berrors.ErrDatabaseNotOpen, berrors.ErrTimeout, berrors.ErrDatabaseReadOnly,
		berrors.ErrInvalid, berrors.ErrInvalidMapping, berrors.ErrVersionMismatch,
		berrors.ErrChecksum, berrors.ErrMaxSizeReached, berrors.ErrTxClosed,
	} {
		if errors.Is(err, e) {
			return true
		}
	}
	return false
}

// MinFree is the free space below which Probe reports the data file's
// filesystem as full: room for bbolt to grow the file by a few of its
// allocation steps for small files.
const MinFree = 1 << 20

// ProbeInterval is how long one probe's answer is reused: readiness checks
// may come often, and each probe is a write transaction (an fsync).
const ProbeInterval = time.Second

// Probe checks that a bbolt data file can be written. It is safe for
// concurrent use; the zero value is not usable, call NewProbe.
type Probe struct {
	db     *bbolt.DB
	bucket []byte
	now    func() time.Time

	mu  sync.Mutex
	at  time.Time
	err error
}

// NewProbe returns a Probe that writes one small key in bucket (a bucket
// of the caller's own, created on the first probe). now is the clock; nil
// means time.Now.
func NewProbe(db *bbolt.DB, bucket string, now func() time.Time) *Probe {
	if now == nil {
		now = time.Now
	}
	return &Probe{db: db, bucket: []byte(bucket), now: now}
}

// Check reports why the data file cannot be written, or nil: its
// filesystem has less than MinFree bytes free, or a write transaction
// fails. A result is reused for ProbeInterval.
func (p *Probe) Check(ctx context.Context) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	now := p.now()
	if age := now.Sub(p.at); !p.at.IsZero() && age >= 0 && age < ProbeInterval {
		return p.err
	}
	p.err = p.check(now)
	p.at = now
	return p.err
}

func (p *Probe) check(now time.Time) error {
	path := p.db.Path()
	if free, ok := freeBytes(filepath.Dir(path)); ok && free < MinFree {
		return fmt.Errorf("the filesystem of the data file %s has %d bytes free (less than %d): free some space; writes fail until then", path, free, MinFree)
	}
	err := p.db.Update(func(tx *bbolt.Tx) error {
		b, err := tx.CreateBucketIfNotExists(p.bucket)
		if err != nil {
			return err
		}
		return b.Put([]byte("probe"), []byte(now.UTC().Format(time.RFC3339Nano)))
	})
	if err != nil {
		return fmt.Errorf("the data file %s cannot be written: %w", path, err)
	}
	return nil
}
