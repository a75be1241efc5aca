package audit_test

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/bffgate/bffgate/issuer/audit"
)

var key = []byte("0123456789abcdef0123456789abcdef")

// TestRotationKeepsChain writes past MaxSize several times, reopens the
// file (a restart) and verifies the chain across every file.
func TestRotationKeepsChain(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "audit.log")
	open := func() *audit.File {
		f, err := audit.Open(audit.FileConfig{Path: path, Key: key, MaxSize: 4096, OnError: func(err error) { t.Error(err) }})
		if err != nil {
			t.Fatal(err)
		}
		return f
	}
	f := open()
	for i := range 40 {
		f.Log(context.Background(), audit.Record{Action: "token", Decision: audit.Allow, ClientID: "agent", Reason: strings.Repeat("r", i)})
	}
	f.Close()
	f = open() // resumes the chain
	for range 10 {
		f.Log(context.Background(), audit.Record{Action: "revoke", Decision: audit.Allow})
	}
	f.Close()
	rotated, _ := filepath.Glob(path + ".*")
	if len(rotated) < 2 {
		t.Fatalf("%d rotated files; want several", len(rotated))
	}
	n, err := audit.Verify(key, append(rotated, path)...)
	if err != nil || n != 50 {
		t.Fatalf("Verify = %d, %v; want 50 records", n, err)
	}
	// A file left out breaks the chain at the next one's first record.
	_, err = audit.Verify(key, append(rotated[len(rotated)-1:], path)...)
	if err != nil {
		t.Fatalf("a suffix of the chain verifies from its first record: %v", err)
	}
	_, err = audit.Verify(key, rotated[0], path)
	var be *audit.BrokenError
	if !errors.As(err, &be) || be.File != path || be.Line != 1 {
		t.Fatalf("Verify with a file missing in the middle = %v; want a break at %s:1", err, path)
	}
	// Another key verifies nothing.
	if _, err := audit.Verify([]byte("another key, 32 bytes long......"), path); !errors.As(err, &be) {
		t.Fatalf("Verify with another key = %v", err)
	}
}

// TestOpenRefusesForgedTail: a chain does not continue from a last record
// that does not verify.
func TestOpenRefusesForgedTail(t *testing.T) {
	path := filepath.Join(t.TempDir(), "audit.log")
	f, err := audit.Open(audit.FileConfig{Path: path, Key: key})
	if err != nil {
		t.Fatal(err)
	}
	f.Log(context.Background(), audit.Record{Action: "login", Decision: audit.Deny})
	f.Close()
	b, _ := os.ReadFile(path)
	os.WriteFile(path, []byte(strings.Replace(string(b), `"deny"`, `"allow"`, 1)), 0o600)
	if _, err := audit.Open(audit.FileConfig{Path: path, Key: key}); err == nil || !strings.Contains(err.Error(), "does not verify") {
		t.Fatalf("Open on an edited tail = %v", err)
	}
}

// BenchmarkLog is the cost of one audit record (encode, HMAC chain, one
// write to the file) from parallel writers.
func BenchmarkLog(b *testing.B) {
	f, err := audit.Open(audit.FileConfig{Path: filepath.Join(b.TempDir(), "audit.log"), Key: key})
	if err != nil {
		b.Fatal(err)
	}
	defer f.Close()
	r := audit.Record{Action: "token", Decision: audit.Allow, ClientID: "spiffe://example.org/agents/mailer", Subject: "demo-user-1",
		Audience: []string{"mail-api"}, GrantType: "client_credentials", AuthMethod: "private_key_jwt", Scope: "profile", TokenID: "sha256:0123456789abcdef0123"}
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			f.Log(context.Background(), r)
		}
	})
}
