package stack

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/bffgate/bffgate/internal/testhttp"
)

// The binary is built into the cache root under a key of the sources,
// found there by a second process (a second cache on the same root)
// without building, and built again when it has gone.
func TestBinaryCache(t *testing.T) {
	t.Parallel()
	root := t.TempDir()
	first := &binaryCache{root: root}
	p, err := first.binary()
	if err != nil {
		t.Fatal(err)
	}
	if rel, err := filepath.Rel(root, p); err != nil || strings.HasPrefix(rel, "..") || strings.Count(filepath.ToSlash(rel), "/") != 1 {
		t.Fatalf("binary at %s, want ROOT/KEY/bffgate under %s", p, root)
	}
	out, err := exec.Command(p, "version").Output()
	if err != nil || !strings.HasPrefix(string(out), "bffgate ") {
		t.Fatalf("%s version: %q, %v", p, out, err)
	}
	// Only the entry: the build directory is gone.
	if entries, _ := os.ReadDir(root); len(entries) != 1 {
		t.Fatalf("the cache root holds %d entries after one build, want 1: %v", len(entries), entries)
	}

	before, err := os.Stat(p)
	if err != nil {
		t.Fatal(err)
	}
	second := &binaryCache{root: root}
	p2, err := second.binary()
	if err != nil || p2 != p {
		t.Fatalf("a second process got %q (%v), want the cached %q", p2, err, p)
	}
	after, err := os.Stat(p)
	if err != nil || !os.SameFile(before, after) {
		t.Fatalf("the second process replaced the cached binary instead of using it (%v)", err)
	}

	// Pruned by another process: the next call builds it again.
	if err := os.Remove(p); err != nil {
		t.Fatal(err)
	}
	p3, err := second.binary()
	if err != nil || p3 != p {
		t.Fatalf("after the binary was removed: %q (%v), want it rebuilt at %q", p3, err, p)
	}
	if _, err := os.Stat(p3); err != nil {
		t.Fatalf("not rebuilt: %v", err)
	}
}

// Pruning removes entries and build directories unused since the cutoff,
// and keeps the current entry and the recently used ones.
func TestPrune(t *testing.T) {
	t.Parallel()
	root := t.TempDir()
	old := time.Now().Add(-2 * unusedFor)
	entry := func(name string, used time.Time) {
		t.Helper()
		dir := filepath.Join(root, name)
		if err := os.MkdirAll(dir, 0o755); err != nil {
			t.Fatal(err)
		}
		bin := filepath.Join(dir, "bffgate")
		if err := os.WriteFile(bin, []byte("x"), 0o755); err != nil {
			t.Fatal(err)
		}
		for _, p := range []string{bin, dir} {
			if err := os.Chtimes(p, used, used); err != nil {
				t.Fatal(err)
			}
		}
	}
	entry("current", old)               // old, but the one in use
	entry("recent", time.Now())         // another checkout's, in use
	entry("stale", old)                 // older sources
	entry(buildDirPrefix+"killed", old) // a build a killed process left
	entry(buildDirPrefix+"running", time.Now())
	// A directory whose own time is old but whose binary was just used.
	entry("touched", old)
	if err := touch(filepath.Join(root, "touched", "bffgate")); err != nil {
		t.Fatal(err)
	}

	prune(root, "current", time.Now().Add(-unusedFor))

	for name, want := range map[string]bool{"current": true, "recent": true, "touched": true, buildDirPrefix + "running": true, "stale": false, buildDirPrefix + "killed": false} {
		_, err := os.Stat(filepath.Join(root, name))
		if got := err == nil; got != want {
			t.Errorf("%s kept = %t, want %t", name, got, want)
		}
	}
}

// TestLogFile: with Options.LogFile the process's output lands in the
// file (and Logs reads it back), also after a restart and a truncation.
func TestLogFile(t *testing.T) {
	path := filepath.Join(t.TempDir(), "bffgate.log")
	s := Start(t, Options{LogFile: path, Env: []string{"BFFGATE_LOG_LEVEL=info"}})
	resp, err := testhttp.Client.Get(s.GatewayURL + "/readyz")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if b, err := os.ReadFile(path); err != nil || len(b) == 0 {
		t.Fatalf("log file after start: %d bytes, %v", len(b), err)
	}
	if !strings.Contains(s.Logs(), "{") {
		t.Fatalf("Logs() does not read the file: %q", s.Logs())
	}
	if err := os.Truncate(path, 0); err != nil {
		t.Fatal(err)
	}
	s.Restart()
	if b, _ := os.ReadFile(path); len(b) == 0 || b[0] == 0 {
		t.Fatalf("after a truncation and a restart the file holds %q, want the new process's lines from offset 0", b[:min(len(b), 40)])
	}
}
