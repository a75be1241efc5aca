//go:build linux

// Package fulldisk makes a full disk for tests: a small tmpfs mounted on a
// fresh directory, and a filler file that takes every free byte of it, so
// that the next write of a data file on it fails with ENOSPC exactly as on
// a real full disk.
//
// Mounting needs root (CI and the project's machines run tests as root).
// Where the mount is refused the test is skipped with a message saying
// so, unless BFFGATE_E2E_REQUIRE is set: then it fails.
package fulldisk

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"testing"
)

// Mount mounts a tmpfs of size bytes on a new directory and returns it;
// the test's cleanup unmounts it.
func Mount(t testing.TB, size int64) string {
	t.Helper()
	dir := t.TempDir()
	out, err := exec.Command("mount", "-t", "tmpfs", "-o", fmt.Sprintf("size=%d,mode=0700", size), "tmpfs", dir).CombinedOutput()
	if err != nil {
		msg := fmt.Sprintf("mounting a tmpfs for a full-disk test was refused (%v: %s): run the tests as root, or in a container allowed to mount", err, out)
		if os.Getenv("BFFGATE_E2E_REQUIRE") != "" {
			t.Fatal(msg)
		}
		t.Skip(msg)
	}
	t.Cleanup(func() {
		// Lazily: a process the test started may still hold a file open
		// while its own cleanup runs.
		if out, err := exec.Command("umount", "-l", dir).CombinedOutput(); err != nil {
			t.Errorf("umount %s: %v: %s", dir, err, out)
		}
	})
	return dir
}

// Filler is a file that holds every free byte of its filesystem.
type Filler struct{ path string }

// Fill writes a file into dir until its filesystem has no space left, and
// returns it. Free removes it.
func Fill(t testing.TB, dir string) *Filler {
	t.Helper()
	f := &Filler{path: filepath.Join(dir, "filler")}
	fh, err := os.OpenFile(f.path, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		t.Fatal(err)
	}
	defer fh.Close()
	buf := make([]byte, 64<<10)
	for len(buf) > 0 {
		if _, err := fh.Write(buf); err != nil {
			if !errors.Is(err, syscall.ENOSPC) {
				t.Fatalf("filling %s: %v", dir, err)
			}
			buf = buf[:len(buf)/2] // the last bytes, in smaller writes
		}
	}
	var st syscall.Statfs_t
	if err := syscall.Statfs(dir, &st); err == nil && st.Bavail != 0 {
		t.Fatalf("filling %s: %d blocks still free", dir, st.Bavail)
	}
	return f
}

// Free removes the filler: the filesystem has its space again.
func (f *Filler) Free(t testing.TB) {
	t.Helper()
	if err := os.Remove(f.path); err != nil && !errors.Is(err, os.ErrNotExist) {
		t.Fatal(err)
	}
}
