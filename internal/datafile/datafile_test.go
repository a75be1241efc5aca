package datafile

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	bbolt "go.etcd.io/bbolt"
)

func TestOpen(t *testing.T) {
	t.Parallel()
	dir := filepath.Join(t.TempDir(), "nested", "data")
	path := filepath.Join(dir, "bffgate.db")
	db, err := Open(path, 100*time.Millisecond)
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	defer db.Close()
	for p, want := range map[string]os.FileMode{dir: 0o700, path: 0o600} {
		fi, err := os.Stat(p)
		if err != nil {
			t.Fatal(err)
		}
		if got := fi.Mode().Perm(); got != want {
			t.Errorf("mode of %s = %o, want %o", p, got, want)
		}
	}
	// A second open of a locked file fails after the timeout with an
	// explanation naming the file (flock locks conflict between open
	// files, even in one process); bbolt alone would wait forever.
	_, err = Open(path, 100*time.Millisecond)
	if err == nil || !strings.Contains(err.Error(), "in use by another bffgate process") || !strings.Contains(err.Error(), path) {
		t.Fatalf("second Open = %v, want the in-use error naming the file", err)
	}
	if _, err := Open("", time.Second); err == nil {
		t.Fatal(`Open("") succeeded`)
	}
}

// A file the process may not write (a read-only data file, as after a
// restore with the wrong mode) is refused at open with its path named.
func TestOpenReadOnlyFile(t *testing.T) {
	t.Parallel()
	if os.Geteuid() == 0 {
		// root opens a 0400 file for writing anyway; a read-only
		// directory stops it neither.
		t.Skip("running as root: file modes do not stop writes")
	}
	path := filepath.Join(t.TempDir(), "bffgate.db")
	db, err := Open(path, time.Second)
	if err != nil {
		t.Fatal(err)
	}
	db.Close()
	if err := os.Chmod(path, 0o400); err != nil {
		t.Fatal(err)
	}
	if _, err := Open(path, time.Second); err == nil || !strings.Contains(err.Error(), path) {
		t.Fatalf("Open of a read-only file = %v, want an error naming it", err)
	}
}

func TestFault(t *testing.T) {
	t.Parallel()
	db, err := Open(filepath.Join(t.TempDir(), "bffgate.db"), time.Second)
	if err != nil {
		t.Fatal(err)
	}
	unavailable := errors.New("unavailable")
	if err := Fault(db, "put", unavailable, nil); err != nil {
		t.Fatalf("Fault(nil) = %v", err)
	}
	mine := errors.New("a caller's error")
	if err := Fault(db, "put", unavailable, mine); !errors.Is(err, mine) || errors.Is(err, unavailable) {
		t.Errorf("Fault(caller's error) = %v; want it wrapped, not unavailable", err)
	}
	db.Close()
	err = db.Update(func(*bbolt.Tx) error { return nil })
	got := Fault(db, "put", unavailable, err)
	if !errors.Is(got, unavailable) || !strings.Contains(got.Error(), db.Path()) {
		t.Errorf("Fault(closed database) = %v; want unavailable, naming the file", got)
	}
}

// The encodings are those the first release wrote; these bytes are what
// the fixture files of issuer/storage/bolt and session/bolt hold.
func TestEncodings(t *testing.T) {
	t.Parallel()
	at := time.Date(2026, 12, 7, 12, 0, 0, 5, time.UTC)
	for _, c := range []struct {
		name      string
		got, want []byte
	}{
		{"issuer index key", IssuerIndexKey("ab", "c"), []byte("\x00\x02abc")},
		{"issuer index prefix", IssuerIndexPrefix("a"), []byte("\x00\x01a")},
		{"issuer expiry key", IssuerExpiryKey(at, 'r', "j"), append(U64(uint64(at.UnixNano())), 'r', 'j')},
		{"session index key", SessionIndexKey("sid", []byte{1, 2}), []byte("\x03sid\x01\x02")},
		{"session index prefix", SessionIndexPrefix("sid"), []byte("\x03sid")},
		{"session expiry key", SessionExpiryKey(at, []byte{9}), append(U64(uint64(at.UnixNano())), 9)},
		{"time before 1970", U64(Nanos(time.Unix(-5, 0))), make([]byte, 8)},
	} {
		if !bytes.Equal(c.got, c.want) {
			t.Errorf("%s = %x, want %x", c.name, c.got, c.want)
		}
	}
	if !FromNanos(Nanos(at)).Equal(at) {
		t.Error("FromNanos(Nanos(t)) != t")
	}
	// "ab"+"c" and "a"+"bc" never share a prefix.
	if bytes.HasPrefix(IssuerIndexKey("a", "bc"), IssuerIndexPrefix("ab")) || bytes.HasPrefix(SessionIndexKey("a", []byte("bc")), SessionIndexPrefix("ab")) {
		t.Error("an owner's prefix matches another owner's keys")
	}
	if b := Issuer(""); string(b.Keys) != "issuer.keys" || string(b.LoginFailures) != "issuer.login_failures" || b.Health != "issuer.health" || string(b.Assertions) != "issuer.assertions" || string(b.Clients) != "issuer.clients" ||
		string(b.Registrations) != "issuer.registrations" || string(b.Consents) != "issuer.consents" || len(b.All()) != 16 {
		t.Errorf("Issuer(\"\") = %+v", b)
	}
}
