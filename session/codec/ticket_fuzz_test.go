package codec

import (
	"bytes"
	"encoding/base64"
	"errors"
	"fmt"
	"path/filepath"
	"strings"
	"testing"

	"github.com/bffgate/bffgate/internal/fuzzcorpus"
	"github.com/bffgate/bffgate/session"
)

// FuzzParseTicket parses a session cookie value as a ticket handle.
// Properties: a handle that parses is canonical (Handle gives it back
// byte for byte, so one ticket has one cookie value); anything else is
// ErrTicket.
func FuzzParseTicket(f *testing.F) {
	tk, err := NewTicket()
	if err != nil {
		f.Fatal(err)
	}
	h := tk.Handle()
	for name, s := range map[string]string{
		"real": h, "padded": h + "=", "std-alphabet": strings.NewReplacer("-", "+", "_", "/").Replace(h),
		"trailing-bits": h[:len(h)-1] + "B", "short": h[:len(h)-1], "empty": "", "space": " " + h[1:],
	} {
		fuzzcorpus.Add(f, "adv-"+name, s)
	}
	f.Fuzz(func(t *testing.T, handle string) {
		tk, err := ParseTicket(handle)
		if err != nil {
			if !errors.Is(err, ErrTicket) {
				t.Fatalf("ParseTicket(%q): %v is not ErrTicket", handle, err)
			}
			return
		}
		if got := tk.Handle(); got != handle {
			t.Fatalf("ParseTicket(%q).Handle() = %q: not canonical", handle, got)
		}
		// String, %v and %#v show the id only, never the key.
		raw, _ := base64.RawURLEncoding.DecodeString(handle)
		id := base64.RawURLEncoding.EncodeToString(raw[:TicketIDSize])
		if tk.ID() != id || tk.String() != "ticket("+id+")" || fmt.Sprintf("%v %#v", tk, tk) != tk.String()+" "+tk.String() {
			t.Fatalf("ticket of %q shows %q, %q", handle, tk.String(), fmt.Sprintf("%#v", tk))
		}
	})
}

// fuzzTicket is the ticket the real seeds of FuzzOpen are sealed under:
// fixed bytes, so that the committed records open in every run.
func fuzzTicket(tb testing.TB) Ticket {
	tb.Helper()
	var t Ticket
	for i := range t.id {
		t.id[i] = byte(i + 1)
	}
	for i := range t.key {
		t.key[i] = byte(0xa0 + i)
	}
	return t
}

const openCorpus = "testdata/fuzz/FuzzOpen"

// FuzzOpen opens a stored record (what a bbolt file or Redis holds) under
// a ticket (what the cookie holds); a handle that does not parse stands
// for the fixed ticket, so that every input exercises Open. Properties:
//   - a refused record is ErrSealed (ParseMeta's too), with no session;
//   - a record that opens was sealed by us under that very ticket: it is
//     byte for byte one of the records the test sealed; its session has
//     the ticket's ID, its clear header (ParseMeta) is MetaOf the session,
//     and it seals and opens again to the same session;
//   - flipping any one byte of it makes it refuse, and another ticket
//     (the same id, another key) opens nothing;
//   - OpenCache answers what Open answers, on the first read and the next.
//
// Seeds: records sealed by Seal (real-*, -fuzzcorpus.update makes them
// afresh) and adversarial ones.
func FuzzOpen(f *testing.F) {
	tk := fuzzTicket(f)
	sealed := map[string][][]byte{} // handle -> records sealed under it
	if fuzzcorpus.Update() {
		for name, s := range map[string]*session.Session{
			"typical": typical(f), "empty": {}, "no-expiry": {Subject: "user-1", SID: "sid-1", AccessToken: "a.b.c"},
		} {
			rec, err := Seal(tk, s)
			if err != nil {
				f.Fatal(err)
			}
			fuzzcorpus.Write(f, openCorpus, "real-"+name, tk.Handle(), rec, uint64(0))
		}
	}
	for _, path := range fuzzcorpus.Files(f, openCorpus, "real-") {
		v := fuzzcorpus.Read(f, path)
		h, _ := v[0].(string)
		rec, _ := v[1].([]byte)
		if _, err := Open(tk, rec); err != nil || h != tk.Handle() {
			f.Fatalf("%s: the real seed does not open: %v", filepath.Base(path), err)
		}
		sealed[h] = append(sealed[h], rec)
	}
	if len(sealed[tk.Handle()]) == 0 {
		f.Fatalf("no real seeds in %s (write them with -fuzzcorpus.update)", openCorpus)
	}
	// Another fixed ticket: it must open none of tk's records.
	other := tk
	other.key[0] ^= 0xff
	real := sealed[tk.Handle()][0]
	for name, r := range map[string][]byte{
		"empty": {}, "version-only": {recordVersion}, "bad-version": append([]byte{2}, real[1:]...),
		"header-only": real[:8], "truncated-tag": real[:len(real)-1],
		"huge-length":     {recordVersion, 0xff, 0xff, 0xff, 0xff, 0x0f},
		"bad-expiry-flag": {recordVersion, 0, 0, 7},
	} {
		fuzzcorpus.Add(f, "adv-"+name, tk.Handle(), r, uint64(0))
	}
	cache := NewOpenCache(8)
	f.Fuzz(func(t *testing.T, handle string, record []byte, flip uint64) {
		ticket, err := ParseTicket(handle)
		if err != nil {
			ticket = tk
		}
		if _, err := ParseMeta(record); err != nil && !errors.Is(err, ErrSealed) {
			t.Fatalf("ParseMeta: %v is not ErrSealed", err)
		}
		s, err := Open(ticket, record)
		for i := range 2 {
			cs, cerr := cache.Open(ticket, record)
			if (cerr == nil) != (err == nil) || (err == nil && !equalSessions(cs, s)) {
				t.Fatalf("OpenCache read %d: %v, %v; Open: %v, %v", i, cs, cerr, s, err)
			}
		}
		if err != nil {
			if s != nil || !errors.Is(err, ErrSealed) {
				t.Fatalf("Open: %v, %v", s, err)
			}
			return
		}
		ours := false
		for _, r := range sealed[ticket.Handle()] {
			ours = ours || bytes.Equal(r, record)
		}
		if !ours {
			t.Fatalf("a record the test never sealed under %v opens: %x", ticket, record)
		}
		if s.ID != ticket.ID() {
			t.Fatalf("opened session has ID %q, want the ticket's %q", s.ID, ticket.ID())
		}
		m, err := ParseMeta(record)
		if want := MetaOf(s); err != nil || m.SID != want.SID || m.Subject != want.Subject || !m.ExpiresAt.Equal(want.ExpiresAt) {
			t.Fatalf("clear header %+v, %v; the session's is %+v", m, err, want)
		}
		again, err := Seal(ticket, s)
		if err != nil {
			t.Fatal(err)
		}
		if s2, err := Open(ticket, again); err != nil || !equalSessions(s, s2) {
			t.Fatalf("resealed session opens as %+v, %v", s2, err)
		}
		mut := bytes.Clone(record)
		mut[flip%uint64(len(mut))] ^= 1 << (flip % 8)
		if _, err := Open(ticket, mut); !errors.Is(err, ErrSealed) {
			t.Fatalf("record with byte %d flipped: %v", flip%uint64(len(mut)), err)
		}
		wrong := other
		if wrong == ticket {
			wrong = tk
		}
		if _, err := Open(wrong, record); !errors.Is(err, ErrSealed) {
			t.Fatalf("another ticket opens the record: %v", err)
		}
	})
}
