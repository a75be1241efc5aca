package codec

import (
	"bytes"
	"crypto/rand"
	"encoding/base64"
	"encoding/binary"
	"encoding/json"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/bffgate/bffgate/session"
)

// fakeJWT returns a compact JWS of random content with segments of the
// given raw sizes, shaped like a real token.
func fakeJWT(t testing.TB, header, payload, sig int) string {
	t.Helper()
	seg := func(n int) string {
		b := make([]byte, n)
		if _, err := rand.Read(b); err != nil {
			t.Fatal(err)
		}
		return base64.RawURLEncoding.EncodeToString(b)
	}
	return seg(header) + "." + seg(payload) + "." + seg(sig)
}

// typical is a session as the gateway keeps one after an RS256 login.
func typical(t testing.TB) *session.Session {
	now := time.Date(2026, 5, 1, 12, 0, 0, 123456789, time.UTC)
	return &session.Session{
		ID:             "id-1",
		Subject:        "248289761001",
		SID:            "08a5019c-17e1-4977-8f42-65a12843ea02",
		Issuer:         "https://login.example.com/realms/main",
		Claims:         []byte(`{"sub":"248289761001","name":"Jane Doe","email":"jane@example.com","email_verified":true,"preferred_username":"jane"}`),
		IDToken:        fakeJWT(t, 75, 420, 256),
		AccessToken:    fakeJWT(t, 75, 340, 256),
		RefreshToken:   fakeJWT(t, 60, 250, 64),
		TokenType:      "Bearer",
		AccessExpiry:   now.Add(5 * time.Minute),
		Created:        now,
		LastSeen:       now.Add(time.Minute),
		IdleTimeout:    30 * time.Minute,
		AbsoluteExpiry: now.Add(12 * time.Hour),
		Version:        3,
	}
}

func equalSessions(a, b *session.Session) bool {
	return a.ID == b.ID && a.Subject == b.Subject && a.SID == b.SID && a.Issuer == b.Issuer &&
		bytes.Equal(a.Claims, b.Claims) && (a.Claims == nil) == (b.Claims == nil) &&
		a.IDToken == b.IDToken && a.AccessToken == b.AccessToken && a.RefreshToken == b.RefreshToken &&
		a.TokenType == b.TokenType && a.AccessExpiry.Equal(b.AccessExpiry) && a.Created.Equal(b.Created) &&
		a.LastSeen.Equal(b.LastSeen) && a.IdleTimeout == b.IdleTimeout &&
		a.AbsoluteExpiry.Equal(b.AbsoluteExpiry) && a.Version == b.Version && a.Frontend == b.Frontend
}

func TestRoundTrip(t *testing.T) {
	t.Parallel()
	local := time.FixedZone("X", 3600)
	cases := []struct {
		name string
		s    *session.Session
	}{
		{"empty", &session.Session{}},
		{"typical", typical(t)},
		{"empty claims kept apart from nil", &session.Session{Claims: []byte{}}},
		{"opaque tokens", &session.Session{AccessToken: "2YotnFZFEjr1zCsicMWpAA", RefreshToken: "tGzv3JOkF0XG5Qx2TlKWIA"}},
		{"JWE (5 segments, empty key)", &session.Session{AccessToken: "eyJhbGciOiJkaXIifQ..AxY8DCtDaGlsbGljb3RoZQ.KDlTtXchhZTGufMYmOYGS4HffxPSUrfmqCHXaI9wOGY.9hH0vgRfYgPnAHOd8stkvw"}},
		{"JWT-looking with padding", &session.Session{AccessToken: "YQ==.YQ.YQ"}},
		{"JWT-looking with CR", &session.Session{AccessToken: "YW\rI.YQ.YQ"}},
		{"non-canonical trailing bits", &session.Session{AccessToken: "YR.YQ.YQ"}},
		{"two segments stays plain", &session.Session{AccessToken: "YQ.YQ"}},
		{"empty segments", &session.Session{IDToken: ".."}},
		{"invalid UTF-8", &session.Session{Subject: "\xff\xfe", Claims: []byte{0, 1, 2}}},
		{"times in another zone and edges", &session.Session{
			Created:        time.Date(1, 1, 1, 0, 0, 0, 1, time.UTC),
			LastSeen:       time.Date(9999, 12, 31, 23, 59, 59, 999999999, time.UTC),
			AccessExpiry:   time.Unix(0, 0),
			AbsoluteExpiry: time.Date(2030, 1, 1, 1, 0, 0, 5, local),
		}},
		{"negative idle", &session.Session{IdleTimeout: -time.Second, Version: ^uint64(0)}},
		{"frontend", &session.Session{Subject: "s", Version: 2, Frontend: "admin"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			b := Marshal(tc.s)
			got, err := Unmarshal(b)
			if err != nil {
				t.Fatalf("Unmarshal: %v", err)
			}
			if !equalSessions(tc.s, got) {
				t.Fatalf("round trip differs:\n in: %+v\nout: %+v", tc.s, got)
			}
			if again := Marshal(got); !bytes.Equal(again, b) {
				t.Fatalf("re-encoding differs")
			}
		})
	}
}

func TestJWTFormUsed(t *testing.T) {
	t.Parallel()
	tok := fakeJWT(t, 30, 300, 256)
	jwt := Marshal(&session.Session{AccessToken: tok})
	if len(jwt) >= len(tok)*80/100 {
		t.Fatalf("JWT form not used: %d bytes for a %d-byte token", len(jwt), len(tok))
	}
	opaque := Marshal(&session.Session{AccessToken: strings.ReplaceAll(tok, ".", "~")})
	if len(opaque) <= len(tok) {
		t.Fatalf("opaque token shrank: %d <= %d", len(opaque), len(tok))
	}
}

func TestMarshalNil(t *testing.T) {
	t.Parallel()
	s, err := Unmarshal(Marshal(nil))
	if err != nil || !equalSessions(s, &session.Session{}) {
		t.Fatalf("Marshal(nil) = %v, %+v", err, s)
	}
}

func TestClampsTimes(t *testing.T) {
	t.Parallel()
	far := time.Date(12000, 1, 1, 0, 0, 0, 0, time.UTC)
	s, err := Unmarshal(Marshal(&session.Session{AbsoluteExpiry: far}))
	if err != nil {
		t.Fatal(err)
	}
	if want := time.Date(9999, 12, 31, 23, 59, 59, 999999999, time.UTC); !s.AbsoluteExpiry.Equal(want) {
		t.Fatalf("far time = %v, want %v", s.AbsoluteExpiry, want)
	}
}

func TestUnmarshalRejects(t *testing.T) {
	t.Parallel()
	good := Marshal(typical(t))
	cases := []struct {
		name    string
		b       []byte
		version bool
	}{
		{"nil", nil, false},
		{"version 0", []byte{0, 0}, true},
		{"version 2", append([]byte{2}, good[1:]...), true},
		{"no presence", []byte{Version}, false},
		{"unknown bit", enc(allBits + 1), false},
		{"JWT bit without token", enc(bitAccessTokenJWT), false},
		{"trailing byte", append(append([]byte{}, good...), 0), false},
		{"truncated", good[:len(good)-1], false},
		{"length past end", enc(bitSubject, uvarint(10), []byte("a")), false},
		{"huge length", enc(bitSubject, uvarint(^uint64(0))), false},
		{"overlong uvarint", []byte{Version, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01}, false},
		{"nanos out of range", enc(bitCreated, varint(1), uvarint(1e9)), false},
		{"year past 9999", enc(bitCreated, varint(maxUnix+1), uvarint(0)), false},
		{"zero time present", enc(bitCreated, varint(minUnix), uvarint(0)), false},
		{"two segments in JWT form", enc(bitAccessToken|bitAccessTokenJWT, uvarint(2), uvarint(0), uvarint(0)), false},
		{"six segments in JWT form", enc(bitAccessToken|bitAccessTokenJWT, uvarint(6), make([]byte, 6)), false},
		{"segment past end", enc(bitAccessToken|bitAccessTokenJWT, uvarint(3), uvarint(0), uvarint(0), uvarint(5)), false},
		{"too big", append([]byte{Version}, make([]byte, MaxSize)...), false},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			s, err := Unmarshal(tc.b)
			if err == nil {
				t.Fatalf("Unmarshal accepted %x: %+v", tc.b, s)
			}
			if !errors.Is(err, ErrMalformed) {
				t.Fatalf("error %v does not wrap ErrMalformed", err)
			}
			if tc.version != errors.Is(err, ErrUnknownVersion) {
				t.Fatalf("error %v: ErrUnknownVersion = %v, want %v", err, !tc.version, tc.version)
			}
		})
	}
}

// enc builds an encoding by hand: version, presence bits, then raw parts.
func enc(bits uint64, parts ...[]byte) []byte {
	b := binary.AppendUvarint([]byte{Version}, bits)
	for _, p := range parts {
		b = append(b, p...)
	}
	return b
}

func varint(v int64) []byte   { return binary.AppendVarint(nil, v) }
func uvarint(v uint64) []byte { return binary.AppendUvarint(nil, v) }

// TestSmallerThanJSON is the reason this package exists: the cookie store
// pays about 1.8 cookie bytes per encoded byte.
func TestSmallerThanJSON(t *testing.T) {
	t.Parallel()
	s := typical(t)
	js, err := json.Marshal(s)
	if err != nil {
		t.Fatal(err)
	}
	bin := Marshal(s)
	ratio := float64(len(bin)) / float64(len(js))
	t.Logf("typical session: binary %d bytes, JSON %d bytes (%.0f%%)", len(bin), len(js), 100*ratio)
	if ratio > 0.8 {
		t.Fatalf("binary encoding is %.0f%% of JSON, want at most 80%%", 100*ratio)
	}
}

func FuzzUnmarshal(f *testing.F) {
	f.Add(Marshal(typical(f)))
	f.Add(Marshal(&session.Session{}))
	f.Add(Marshal(&session.Session{Claims: []byte{}, AccessToken: "a.b.c", IdleTimeout: time.Hour}))
	f.Add([]byte{Version, 0xff, 0xff, 0x0f})
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, b []byte) {
		s, err := Unmarshal(b)
		if err != nil {
			if s != nil {
				t.Fatal("session returned with an error")
			}
			return
		}
		// Whatever decodes re-encodes to something that decodes the same.
		s2, err := Unmarshal(Marshal(s))
		if err != nil {
			t.Fatalf("re-encoding of a decoded session fails: %v", err)
		}
		if !equalSessions(s, s2) {
			t.Fatalf("re-encoding changes the session:\n%+v\n%+v", s, s2)
		}
	})
}

func FuzzRoundTrip(f *testing.F) {
	ts := typical(f)
	f.Add(ts.ID, ts.Subject, string(ts.Claims), ts.IDToken, ts.AccessToken, "opaque", int64(0), int64(123), uint64(7), false)
	f.Add("", "", "", "a.b.c", "..", "a.b.c.d.e", int64(-62135596800), int64(-1), uint64(0), true)
	f.Fuzz(func(t *testing.T, id, sub, claims, idt, at, rt string, sec, idle int64, version uint64, nilClaims bool) {
		tm := time.Unix(sec%maxUnix, idle&0x3fffffff)
		s := &session.Session{
			ID: id, Subject: sub, SID: sub + id, Issuer: id, Claims: []byte(claims),
			IDToken: idt, AccessToken: at, RefreshToken: rt, TokenType: sub,
			AccessExpiry: tm, Created: tm.Add(time.Duration(idle)), LastSeen: tm,
			IdleTimeout: time.Duration(idle), AbsoluteExpiry: tm, Version: version,
		}
		if nilClaims {
			s.Claims = nil
		}
		got, err := Unmarshal(Marshal(s))
		if err != nil {
			t.Fatalf("Unmarshal(Marshal(%+v)): %v", s, err)
		}
		// Times outside years 1..9999 are clamped.
		want := *s
		for _, p := range []*time.Time{&want.AccessExpiry, &want.Created, &want.LastSeen, &want.AbsoluteExpiry} {
			switch {
			case p.IsZero():
			case p.Unix() < minUnix:
				*p = time.Unix(minUnix, 1)
			case p.Unix() > maxUnix:
				*p = time.Unix(maxUnix, 999999999)
			}
		}
		if !equalSessions(&want, got) {
			t.Fatalf("round trip differs:\n in: %+v\nout: %+v", s, got)
		}
	})
}

// TestFrontendCompatible: an encoding written before Session.Frontend
// existed (no presence bit 18) still decodes, with the classic frontend
// "", and a session without a frontend encodes exactly as before.
func TestFrontendCompatible(t *testing.T) {
	t.Parallel()
	// Version 1, presence Subject|Version, "sub", 7: what the first
	// release wrote for this session.
	old := enc(bitSubject|bitVersion, uvarint(3), []byte("sub"), uvarint(7))
	s, err := Unmarshal(old)
	if err != nil {
		t.Fatal(err)
	}
	if s.Subject != "sub" || s.Version != 7 || s.Frontend != "" {
		t.Fatalf("decoded %+v", s)
	}
	if again := Marshal(s); !bytes.Equal(again, old) {
		t.Fatalf("a session without frontend encodes as %x, the first release wrote %x", again, old)
	}
	s.Frontend = "shop"
	b := Marshal(s)
	got, err := Unmarshal(b)
	if err != nil || got.Frontend != "shop" {
		t.Fatalf("frontend round trip: %+v, %v", got, err)
	}
	// The frontend is the last field: cutting it leaves a length past
	// the end, refused.
	if _, err := Unmarshal(b[:len(b)-1]); !errors.Is(err, ErrMalformed) {
		t.Fatalf("cut frontend: %v", err)
	}
}
