package boltfault_test

import (
	"errors"
	"fmt"
	"io/fs"
	"syscall"
	"testing"

	berrors "go.etcd.io/bbolt/errors"

	"github.com/bffgate/bffgate/internal/boltfault"
)

func TestIs(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name string
		err  error
		want bool
	}{
		{"nil", nil, false},
		{"ENOSPC from a write", &fs.PathError{Op: "write", Path: "/data/bffgate.db", Err: syscall.ENOSPC}, true},
		{"EDQUOT", fmt.Errorf("commit: %w", &fs.PathError{Op: "write", Path: "x", Err: syscall.EDQUOT}), true},
		{"EIO from fdatasync", fmt.Errorf("sync: %w", syscall.EIO), true},
		{"EROFS", &fs.PathError{Op: "open", Path: "x", Err: syscall.EROFS}, true},
		{"closed database", fmt.Errorf("get: %w", berrors.ErrDatabaseNotOpen), true},
		{"lock timeout", berrors.ErrTimeout, true},
		{"read-only database", berrors.ErrDatabaseReadOnly, true},
		{"checksum", berrors.ErrChecksum, true},
		{"key too large (the caller's)", berrors.ErrKeyTooLarge, false},
		{"bucket not found (the caller's)", berrors.ErrBucketNotFound, false},
		{"a plain error", errors.New("record does not decode"), false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := boltfault.Is(tc.err); got != tc.want {
				t.Errorf("Is(%v) = %t, want %t", tc.err, got, tc.want)
			}
		})
	}
}
