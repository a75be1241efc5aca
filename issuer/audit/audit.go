// Package audit is the issuer's audit trail: one structured record per
// authentication or authorization decision (logins, grants, exchanges,
// refused introspections, revocations, agent disable and enable), with
// the fields of the AIMS framework (draft-klrc-aiagent-auth): the client
// or agent, the delegated subject, the resource or audience, the action,
// the decision and its reason, the time and the request id.
//
// Records go to an append-only file, one JSON object a line, each sealed
// with an HMAC-SHA256 over its content and the MAC of the record before
// it: a chain. Editing, removing or reordering a record breaks the chain
// at that record, which Verify names. Rotation by size moves the file
// aside and carries the chain on into the next one.
//
// # Security
//
// A record holds no token, secret, code or assertion: token ids (jti,
// grant id) or SHA-256 digests only. The chain proves integrity to whoever
// holds the HMAC key (kept in the issuer's store, never in the file); it
// does not stop someone with the key from rewriting the whole file, and a
// truncation that removes the last records is seen only against the
// record count an operator knows (the metrics). Records are written with
// one write(2) each, not fsynced: a crash of the process loses none, a
// power loss may lose the last ones.
package audit

import (
	"bufio"
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sync"
	"time"
)

// Decisions.
const (
	Allow = "allow"
	Deny  = "deny"
)

// Record is one audit record.
type Record struct {
	// Seq numbers the records of a chain from 1; Time is when the
	// decision was made.
	Seq  uint64    `json:"seq"`
	Time time.Time `json:"time"`
	// RequestID correlates the record with the request's log lines.
	RequestID string `json:"request_id,omitempty"`
	// Action is what was decided: login, token, introspect, revoke,
	// userinfo, client_auth, agent_disable, agent_enable, token_exchange.
	Action string `json:"action"`
	// Decision is allow or deny; Reason says why (for a deny, what the
	// client was told, without secrets).
	Decision string `json:"decision"`
	Reason   string `json:"reason,omitempty"`
	// ClientID is the client or agent; Subject the delegated subject
	// (the user, or client:<id> for a client acting for itself); Actor
	// the acting party of a delegation (token exchange).
	ClientID string `json:"client_id,omitempty"`
	Subject  string `json:"sub,omitempty"`
	Actor    string `json:"act,omitempty"`
	// Audience and Resource are what the token is for.
	Audience []string `json:"aud,omitempty"`
	Resource string   `json:"resource,omitempty"`
	// GrantType, AuthMethod and Scope detail a grant.
	GrantType  string `json:"grant_type,omitempty"`
	AuthMethod string `json:"auth_method,omitempty"`
	Scope      string `json:"scope,omitempty"`
	// TokenID names a token by its jti or grant id, or a SHA-256 digest:
	// never the token.
	TokenID string `json:"token_id,omitempty"`
	// Prev is the MAC of the record before (hex; empty for the first of
	// a chain) and MAC this record's: HMAC-SHA256 under the audit key of
	// the record encoded with MAC empty.
	Prev string `json:"prev"`
	MAC  string `json:"mac"`
}

// Logger receives audit records. The issuer calls it for each decision;
// other features (token exchange) call the same. Log fills Seq, Prev and
// MAC (and Time when zero); it never fails the request: a write failure
// is the Logger's to report.
type Logger interface {
	Log(ctx context.Context, r Record)
}

// Discard is a Logger that keeps nothing (no audit file configured).
type Discard struct{}

func (Discard) Log(context.Context, Record) {}

// seal computes r's MAC under key (r.MAC ignored).
func seal(key []byte, r Record) (string, error) {
	r.MAC = ""
	b, err := json.Marshal(r)
	if err != nil {
		return "", err
	}
	m := hmac.New(sha256.New, key)
	m.Write(b)
	return hex.EncodeToString(m.Sum(nil)), nil
}

// FileConfig configures a File.
type FileConfig struct {
	// Path is the audit file. Required.
	Path string
	// Key is the HMAC key (at least 32 bytes). Required.
	Key []byte
	// MaxSize rotates the file once it reaches this many bytes: it is
	// renamed to Path.<UTC time> and a new one is started, the chain
	// continuing across. Zero means 100 MiB.
	MaxSize int64
	// OnError is called with each write failure (the issuer logs and
	// counts it); nil ignores them.
	OnError func(error)
}

// DefaultMaxSize is FileConfig.MaxSize's default.
const DefaultMaxSize = 100 << 20

// File is the append-only audit file. It is safe for concurrent use.
type File struct {
	cfg  FileConfig
	mu   sync.Mutex
	f    *os.File
	size int64
	seq  uint64
	prev string
	now  func() time.Time
}

var _ Logger = (*File)(nil)

// Open opens (or creates) the audit file and resumes the chain from its
// last record. A last record that does not verify under the key is an
// error: the chain would continue from a forged link.
func Open(cfg FileConfig) (*File, error) {
	if cfg.Path == "" {
		return nil, errors.New("audit: the file path is empty")
	}
	if len(cfg.Key) < 32 {
		return nil, fmt.Errorf("audit: the HMAC key is %d bytes; it must be at least 32", len(cfg.Key))
	}
	if cfg.MaxSize == 0 {
		cfg.MaxSize = DefaultMaxSize
	}
	if cfg.MaxSize < 4096 {
		return nil, fmt.Errorf("audit: the maximum size %d is below 4096 bytes", cfg.MaxSize)
	}
	a := &File{cfg: cfg, now: time.Now}
	if err := a.resume(); err != nil {
		return nil, err
	}
	f, err := os.OpenFile(cfg.Path, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o600)
	if err != nil {
		return nil, fmt.Errorf("audit: %w", err)
	}
	st, err := f.Stat()
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("audit: %w", err)
	}
	a.f, a.size = f, st.Size()
	return a, nil
}

// resume reads the last record of the file, or of the newest rotated
// file when the file is missing or empty, to continue its chain.
func (a *File) resume() error {
	candidates := []string{a.cfg.Path}
	if rotated, _ := filepath.Glob(a.cfg.Path + ".*"); len(rotated) > 0 {
		candidates = append(candidates, rotated[len(rotated)-1]) // names sort by time
	}
	for _, p := range candidates {
		last, ok, err := lastLine(p)
		if err != nil {
			return err
		}
		if !ok {
			continue
		}
		var r Record
		if err := json.Unmarshal(last, &r); err != nil {
			return fmt.Errorf("audit: the last record of %s is not JSON (a torn write?): %v; move the file aside to start a new chain", p, err)
		}
		mac, err := seal(a.cfg.Key, r)
		if err != nil || !hmac.Equal([]byte(mac), []byte(r.MAC)) {
			return fmt.Errorf("audit: the last record of %s (seq %d) does not verify under the audit key: the file was edited or the key changed; run `bffgate audit verify` on it", p, r.Seq)
		}
		a.seq, a.prev = r.Seq, r.MAC
		return nil
	}
	return nil
}

// lastLine returns the last non-empty line of path.
func lastLine(path string) ([]byte, bool, error) {
	f, err := os.Open(path)
	if errors.Is(err, os.ErrNotExist) {
		return nil, false, nil
	}
	if err != nil {
		return nil, false, fmt.Errorf("audit: %w", err)
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return nil, false, fmt.Errorf("audit: %w", err)
	}
	// A record is well under 64 KiB; read the tail.
	off := max(st.Size()-64<<10, 0)
	buf := make([]byte, st.Size()-off)
	if _, err := f.ReadAt(buf, off); err != nil && !errors.Is(err, io.EOF) {
		return nil, false, fmt.Errorf("audit: %w", err)
	}
	buf = bytes.TrimRight(buf, "\n")
	if len(buf) == 0 {
		return nil, false, nil
	}
	if i := bytes.LastIndexByte(buf, '\n'); i >= 0 {
		buf = buf[i+1:]
	}
	return buf, true, nil
}

// Log seals r into the chain and appends it.
func (a *File) Log(_ context.Context, r Record) {
	if err := a.write(r); err != nil && a.cfg.OnError != nil {
		a.cfg.OnError(err)
	}
}

func (a *File) write(r Record) error {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.f == nil {
		return errors.New("audit: the file is closed")
	}
	if r.Time.IsZero() {
		r.Time = a.now()
	}
	r.Time = r.Time.UTC()
	r.Seq, r.Prev = a.seq+1, a.prev
	mac, err := seal(a.cfg.Key, r)
	if err != nil {
		return fmt.Errorf("audit: encode: %w", err)
	}
	r.MAC = mac
	line, err := json.Marshal(r)
	if err != nil {
		return fmt.Errorf("audit: encode: %w", err)
	}
	line = append(line, '\n')
	if a.size > 0 && a.size+int64(len(line)) > a.cfg.MaxSize {
		if err := a.rotate(r.Time); err != nil {
			return err
		}
	}
	n, err := a.f.Write(line)
	a.size += int64(n)
	if err != nil {
		return fmt.Errorf("audit: write %s: %w", a.cfg.Path, err)
	}
	a.seq, a.prev = r.Seq, r.MAC
	return nil
}

// rotate moves the full file aside (Path.<time>) and starts a new one.
func (a *File) rotate(now time.Time) error {
	if err := a.f.Close(); err != nil {
		return fmt.Errorf("audit: close %s: %w", a.cfg.Path, err)
	}
	a.f = nil
	name := a.cfg.Path + "." + now.UTC().Format("20060102T150405.000000000Z")
	if err := os.Rename(a.cfg.Path, name); err != nil {
		return fmt.Errorf("audit: rotate %s: %w", a.cfg.Path, err)
	}
	f, err := os.OpenFile(a.cfg.Path, os.O_WRONLY|os.O_APPEND|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return fmt.Errorf("audit: rotate %s: %w", a.cfg.Path, err)
	}
	a.f, a.size = f, 0
	return nil
}

// Close closes the file.
func (a *File) Close() error {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.f == nil {
		return nil
	}
	err := a.f.Close()
	a.f = nil
	return err
}

// BrokenError names the first record where a chain breaks.
type BrokenError struct {
	File string
	Line int
	Seq  uint64
	Why  string
}

func (e *BrokenError) Error() string {
	return fmt.Sprintf("%s:%d: record seq %d: %s", e.File, e.Line, e.Seq, e.Why)
}

// Verify checks the chain across files, given in order (rotated files
// first, oldest first, then the current one). It returns how many records
// verified, and a *BrokenError at the first record that does not. The
// first record's Prev is taken as given (its predecessor may have been
// removed with an old rotated file).
func Verify(key []byte, files ...string) (int, error) {
	var (
		n    int
		prev string
		seq  uint64
	)
	for _, path := range files {
		f, err := os.Open(path)
		if err != nil {
			return n, fmt.Errorf("audit: %w", err)
		}
		sc := bufio.NewScanner(f)
		sc.Buffer(make([]byte, 64<<10), 1<<20)
		line := 0
		for sc.Scan() {
			line++
			raw := sc.Bytes()
			if len(bytes.TrimSpace(raw)) == 0 {
				continue
			}
			broken := func(s uint64, format string, args ...any) error {
				f.Close()
				return &BrokenError{File: path, Line: line, Seq: s, Why: fmt.Sprintf(format, args...)}
			}
			var r Record
			dec := json.NewDecoder(bytes.NewReader(raw))
			dec.DisallowUnknownFields()
			if err := dec.Decode(&r); err != nil {
				return n, broken(seq+1, "not a record: %v", err)
			}
			mac, err := seal(key, r)
			switch {
			case err != nil:
				return n, broken(r.Seq, "cannot be encoded: %v", err)
			case !hmac.Equal([]byte(mac), []byte(r.MAC)):
				return n, broken(r.Seq, "its MAC does not verify: the record was edited (or the key is not this chain's)")
			case n > 0 && r.Prev != prev:
				return n, broken(r.Seq, "its prev does not match the MAC of the record before: a record was removed, inserted or reordered")
			case n > 0 && r.Seq != seq+1:
				return n, broken(r.Seq, "its seq follows %d: a record was removed or inserted", seq)
			}
			prev, seq = r.MAC, r.Seq
			n++
		}
		err = sc.Err()
		f.Close()
		if err != nil {
			return n, fmt.Errorf("audit: read %s: %w", path, err)
		}
	}
	return n, nil
}
