// Package storagetest is the contract suite of storage.Store: every
// implementation (bolt, redis) runs RunStoreTests in its own tests, so all
// of them behave alike where the issuer can tell (the dex
// storage/conformance pattern).
//
// The suite passes times explicitly and never sleeps. Its times are near
// the real clock (time.Now at the start of each test) so that a backend
// with server-side expiry (Redis TTLs) keeps every record the suite still
// expects to find.
package storagetest

import (
	"context"
	"errors"
	"fmt"
	"reflect"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/bffgate/bffgate/issuer/storage"
)

// RunStoreTests runs the contract suite. newStore returns a fresh, empty
// Store for one subtest; it registers its own cleanup with t.Cleanup.
// Subtests run in parallel, each with its own Store.
func RunStoreTests(t *testing.T, newStore func(t *testing.T) storage.Store) {
	tests := []struct {
		name string
		run  func(t *testing.T, s storage.Store)
	}{
		{"Keys", testKeys},
		{"Secret", testSecret},
		{"SecretConcurrent", testSecretConcurrent},
		{"Codes", testCodes},
		{"CodeExpired", testCodeExpired},
		{"CodeMintError", testCodeMintError},
		{"CodeInvalidMint", testCodeInvalidMint},
		{"RefreshRotation", testRefreshRotation},
		{"RefreshRotationRace", testRefreshRotationRace},
		{"RefreshExpired", testRefreshExpired},
		{"RevokeGrant", testRevokeGrant},
		{"RevokeAccessToken", testRevokeAccessToken},
		{"RevokeSID", testRevokeSID},
		{"DenylistChanges", testDenylistChanges},
		{"Purge", testPurge},
		{"LoginSessions", testLoginSessions},
		{"LoginLockout", testLoginLockout},
		{"LoginWindow", testLoginWindow},
		{"LoginReset", testLoginReset},
		{"LoginConcurrent", testLoginConcurrent},
		{"LoginInvalid", testLoginInvalid},
		{"Ping", testPing},
		{"AssertionReplay", testAssertionReplay},
		{"AssertionReplayConcurrent", testAssertionReplayConcurrent},
		{"ClientStates", testClientStates},
		{"Registrations", testRegistrations},
		{"RegistrationsConcurrent", testRegistrationsConcurrent},
		{"Consents", testConsents},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			tc.run(t, newStore(t))
		})
	}
}

// base is the suite's "now": near the real clock, whole milliseconds
// (the coarsest resolution a backend may keep), UTC.
func base() time.Time { return time.Now().Truncate(time.Millisecond).UTC() }

var errMint = errors.New("storagetest: mint failed on purpose")

func testKeys(t *testing.T, s storage.Store) {
	ctx := context.Background()
	keys, err := s.Keys(ctx)
	if err != nil || len(keys) != 0 {
		t.Fatalf("Keys on an empty store = %v, %v; want none, nil", keys, err)
	}
	now := base()
	want := []storage.Key{
		{ID: "k1", Alg: "RS256", Use: "sig", Private: []byte(`{"kty":"RSA"}`), Active: false, Created: now.Add(-time.Hour), Retired: now},
		{ID: "k2", Alg: "ES256", Use: "sig", Private: []byte(`{"kty":"EC"}`), Active: true, Created: now},
	}
	err = s.UpdateKeys(ctx, func(old []storage.Key) ([]storage.Key, error) {
		if len(old) != 0 {
			t.Errorf("UpdateKeys fn got %d keys on an empty store", len(old))
		}
		return want, nil
	})
	if err != nil {
		t.Fatalf("UpdateKeys: %v", err)
	}
	got, err := s.Keys(ctx)
	if err != nil {
		t.Fatalf("Keys: %v", err)
	}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("Keys = %+v\nwant %+v", got, want)
	}

	// An error from fn changes nothing and comes back to the caller.
	err = s.UpdateKeys(ctx, func(old []storage.Key) ([]storage.Key, error) {
		if !reflect.DeepEqual(old, want) {
			t.Errorf("UpdateKeys fn got %+v, want the stored %+v", old, want)
		}
		return nil, errMint
	})
	if !errors.Is(err, errMint) {
		t.Fatalf("UpdateKeys with failing fn = %v, want %v", err, errMint)
	}
	got, err = s.Keys(ctx)
	if err != nil || !reflect.DeepEqual(got, want) {
		t.Fatalf("after failed UpdateKeys Keys = %+v, %v; want unchanged", got, err)
	}
}

func testSecret(t *testing.T, s storage.Store) {
	ctx := context.Background()
	// A failing generator stores nothing: the next call generates again.
	_, err := s.Secret(ctx, "cookie", func() ([]byte, error) { return nil, errMint })
	if !errors.Is(err, errMint) {
		t.Fatalf("Secret with failing gen = %v, want %v", err, errMint)
	}
	calls := 0
	gen := func() ([]byte, error) { calls++; return []byte(fmt.Sprintf("secret-%d", calls)), nil }
	v1, err := s.Secret(ctx, "cookie", gen)
	if err != nil || string(v1) != "secret-1" {
		t.Fatalf("Secret first call = %q, %v; want secret-1", v1, err)
	}
	v2, err := s.Secret(ctx, "cookie", gen)
	if err != nil || string(v2) != "secret-1" || calls != 1 {
		t.Fatalf("Secret second call = %q, %v (gen calls %d); want the stored secret-1 and no new gen call", v2, err, calls)
	}
	v3, err := s.Secret(ctx, "client", gen)
	if err != nil || string(v3) != "secret-2" {
		t.Fatalf("Secret of another name = %q, %v; want secret-2", v3, err)
	}
}

func testSecretConcurrent(t *testing.T, s storage.Store) {
	ctx := context.Background()
	var calls atomic.Int32
	gen := func() ([]byte, error) {
		n := calls.Add(1)
		return []byte(fmt.Sprintf("gen-%d", n)), nil
	}
	const n = 16
	got := make([][]byte, n)
	errs := make([]error, n)
	var wg sync.WaitGroup
	start := make(chan struct{})
	for i := range n {
		wg.Go(func() {
			<-start
			got[i], errs[i] = s.Secret(ctx, "shared", gen)
		})
	}
	close(start)
	wg.Wait()
	for i := range n {
		if errs[i] != nil {
			t.Fatalf("caller %d: %v", i, errs[i])
		}
		if string(got[i]) != string(got[0]) {
			t.Fatalf("caller %d got %q, caller 0 got %q: concurrent callers must share one secret", i, got[i], got[0])
		}
	}
	if c := calls.Load(); c != 1 {
		t.Fatalf("gen called %d times by %d concurrent callers, want 1", c, n)
	}
}

func newCode(hash, sid string, now time.Time) storage.AuthCode {
	return storage.AuthCode{
		Hash: hash, ClientID: "spa", RedirectURI: "https://app.example/cb", Scope: "openid offline_access",
		Nonce: "n-" + hash, CodeChallenge: "challenge", CodeChallengeMethod: "S256",
		Subject: "alice", SID: sid, AuthTime: now.Add(-time.Minute), ExpiresAt: now.Add(time.Minute),
		Claims: []byte(`{"email":"alice@example.com"}`),
	}
}

// mintFor returns a mint that creates grant grantID with one refresh token
// jti expiring at exp (zero jti: no refresh token).
func mintFor(grantID, jti string, now, exp time.Time) func(storage.AuthCode) (storage.Issued, error) {
	return func(c storage.AuthCode) (storage.Issued, error) {
		iss := storage.Issued{Grant: &storage.Grant{
			ID: grantID, ClientID: c.ClientID, Subject: c.Subject, SID: c.SID, Scope: c.Scope,
			AuthTime: c.AuthTime, Created: now, ExpiresAt: exp, Claims: c.Claims,
		}}
		if jti != "" {
			iss.Refresh = &storage.RefreshToken{
				JTI: jti, GrantID: grantID, ClientID: c.ClientID, Subject: c.Subject, SID: c.SID,
				Scope: c.Scope, IssuedAt: now, ExpiresAt: exp,
			}
		}
		return iss, nil
	}
}

// rotateTo returns a RotateRefresh mint that allowlists newJTI.
func rotateTo(newJTI string, now, exp time.Time) func(storage.RefreshToken) (storage.Issued, error) {
	return func(old storage.RefreshToken) (storage.Issued, error) {
		r := old
		r.JTI, r.IssuedAt, r.ExpiresAt = newJTI, now, exp
		return storage.Issued{Refresh: &r}, nil
	}
}

// grantWithRefresh creates and redeems a code, leaving grant grantID with
// refresh token jti on the allowlist.
func grantWithRefresh(t *testing.T, s storage.Store, grantID, sid, jti string, now, exp time.Time) {
	t.Helper()
	ctx := context.Background()
	code := newCode("code-"+grantID, sid, now)
	if err := s.CreateCode(ctx, code); err != nil {
		t.Fatalf("CreateCode: %v", err)
	}
	if _, err := s.RedeemCode(ctx, code.Hash, now, mintFor(grantID, jti, now, exp)); err != nil {
		t.Fatalf("RedeemCode: %v", err)
	}
}

func wantAllowlisted(t *testing.T, s storage.Store, jti string, want bool) {
	t.Helper()
	r, err := s.RefreshToken(context.Background(), jti)
	switch {
	case want && err != nil:
		t.Fatalf("RefreshToken(%s) = %v, want it allowlisted", jti, err)
	case want && r.JTI != jti:
		t.Fatalf("RefreshToken(%s) returned record of %q", jti, r.JTI)
	case !want && !errors.Is(err, storage.ErrNotFound):
		t.Fatalf("RefreshToken(%s) = %+v, %v; want ErrNotFound", jti, r, err)
	}
}

func wantDenied(t *testing.T, s storage.Store, kind storage.DenyKind, id string, want bool) {
	t.Helper()
	got, err := s.Denied(context.Background(), kind, id)
	if err != nil || got != want {
		t.Fatalf("Denied(%s, %s) = %v, %v; want %v", kind, id, got, err, want)
	}
}

func testCodes(t *testing.T, s storage.Store) {
	ctx := context.Background()
	now := base()
	code := newCode("h1", "sid1", now)
	if err := s.CreateCode(ctx, code); err != nil {
		t.Fatalf("CreateCode: %v", err)
	}
	if err := s.CreateCode(ctx, code); !errors.Is(err, storage.ErrAlreadyExists) {
		t.Fatalf("second CreateCode = %v, want ErrAlreadyExists", err)
	}
	if _, err := s.RedeemCode(ctx, "unknown", now, mintFor("g", "r", now, now.Add(time.Hour))); !errors.Is(err, storage.ErrNotFound) {
		t.Fatalf("RedeemCode(unknown) = %v, want ErrNotFound", err)
	}

	var seen storage.AuthCode
	mint := mintFor("g1", "r1", now, now.Add(time.Hour))
	got, err := s.RedeemCode(ctx, code.Hash, now, func(c storage.AuthCode) (storage.Issued, error) {
		seen = c
		return mint(c)
	})
	if err != nil {
		t.Fatalf("RedeemCode: %v", err)
	}
	if !reflect.DeepEqual(seen, code) {
		t.Errorf("mint got %+v\nwant the stored code %+v", seen, code)
	}
	want := code
	want.RedeemedGrant = "g1"
	if !reflect.DeepEqual(got, want) {
		t.Errorf("RedeemCode returned %+v\nwant %+v", got, want)
	}
	wantAllowlisted(t, s, "r1", true)
	r, _ := s.RefreshToken(ctx, "r1")
	if r.GrantID != "g1" || r.SID != "sid1" || r.Subject != "alice" || !r.ExpiresAt.Equal(now.Add(time.Hour)) {
		t.Errorf("allowlist record = %+v", r)
	}

	// The replay is refused, names the grant and mints nothing.
	_, err = s.RedeemCode(ctx, code.Hash, now, func(storage.AuthCode) (storage.Issued, error) {
		t.Error("mint called on a replayed code")
		return storage.Issued{}, errMint
	})
	var reused *storage.CodeReusedError
	if !errors.As(err, &reused) || !errors.Is(err, storage.ErrCodeReused) {
		t.Fatalf("second RedeemCode = %v, want *CodeReusedError", err)
	}
	if reused.Code.RedeemedGrant != "g1" {
		t.Fatalf("CodeReusedError names grant %q, want g1", reused.Code.RedeemedGrant)
	}
}

func testCodeExpired(t *testing.T, s storage.Store) {
	ctx := context.Background()
	now := base()
	code := newCode("h-exp", "", now)
	if err := s.CreateCode(ctx, code); err != nil {
		t.Fatalf("CreateCode: %v", err)
	}
	for _, at := range []time.Time{code.ExpiresAt, code.ExpiresAt.Add(time.Second)} {
		_, err := s.RedeemCode(ctx, code.Hash, at, func(storage.AuthCode) (storage.Issued, error) {
			t.Error("mint called for an expired code")
			return storage.Issued{}, errMint
		})
		if !errors.Is(err, storage.ErrExpired) {
			t.Fatalf("RedeemCode at %v (expiry %v) = %v, want ErrExpired", at, code.ExpiresAt, err)
		}
	}
	// Just before expiry it still works.
	if _, err := s.RedeemCode(ctx, code.Hash, code.ExpiresAt.Add(-time.Millisecond), mintFor("g", "r", now, now.Add(time.Hour))); err != nil {
		t.Fatalf("RedeemCode before expiry: %v", err)
	}
}

func testCodeMintError(t *testing.T, s storage.Store) {
	ctx := context.Background()
	now := base()
	code := newCode("h-mint", "sid", now)
	if err := s.CreateCode(ctx, code); err != nil {
		t.Fatalf("CreateCode: %v", err)
	}
	_, err := s.RedeemCode(ctx, code.Hash, now, func(storage.AuthCode) (storage.Issued, error) { return storage.Issued{}, errMint })
	if !errors.Is(err, errMint) {
		t.Fatalf("RedeemCode with failing mint = %v, want %v", err, errMint)
	}
	// Nothing was stored: the code is still unredeemed.
	got, err := s.RedeemCode(ctx, code.Hash, now, mintFor("g", "r", now, now.Add(time.Hour)))
	if err != nil || got.RedeemedGrant != "g" {
		t.Fatalf("RedeemCode after failed mint = %+v, %v; want success", got, err)
	}
}

func testCodeInvalidMint(t *testing.T, s storage.Store) {
	ctx := context.Background()
	now := base()
	code := newCode("h-bad", "sid", now)
	if err := s.CreateCode(ctx, code); err != nil {
		t.Fatalf("CreateCode: %v", err)
	}
	bad := []struct {
		name string
		iss  storage.Issued
	}{
		{"no grant", storage.Issued{}},
		{"refresh without jti", storage.Issued{
			Grant:   &storage.Grant{ID: "g", ExpiresAt: now.Add(time.Hour)},
			Refresh: &storage.RefreshToken{GrantID: "g", ExpiresAt: now.Add(time.Hour)},
		}},
		{"refresh of another grant", storage.Issued{
			Grant:   &storage.Grant{ID: "g", ExpiresAt: now.Add(time.Hour)},
			Refresh: &storage.RefreshToken{JTI: "r", GrantID: "other", ExpiresAt: now.Add(time.Hour)},
		}},
	}
	for _, b := range bad {
		_, err := s.RedeemCode(ctx, code.Hash, now, func(storage.AuthCode) (storage.Issued, error) { return b.iss, nil })
		if err == nil {
			t.Fatalf("%s: RedeemCode accepted an invalid mint", b.name)
		}
		wantAllowlisted(t, s, "r", false)
	}
	if _, err := s.RedeemCode(ctx, code.Hash, now, mintFor("g", "r", now, now.Add(time.Hour))); err != nil {
		t.Fatalf("RedeemCode after rejected mints: %v (a rejected mint must leave the code unredeemed)", err)
	}
}

func testRefreshRotation(t *testing.T, s storage.Store) {
	ctx := context.Background()
	now := base()
	exp := now.Add(time.Hour)
	grantWithRefresh(t, s, "g1", "sid", "r1", now, exp)

	if err := s.RotateRefresh(ctx, "unknown", true, now, rotateTo("x", now, exp)); !errors.Is(err, storage.ErrNotFound) {
		t.Fatalf("RotateRefresh(unknown) = %v, want ErrNotFound", err)
	}

	// A failing mint changes nothing.
	if err := s.RotateRefresh(ctx, "r1", true, now, func(storage.RefreshToken) (storage.Issued, error) { return storage.Issued{}, errMint }); !errors.Is(err, errMint) {
		t.Fatalf("RotateRefresh with failing mint = %v, want %v", err, errMint)
	}
	wantAllowlisted(t, s, "r1", true)

	var seen storage.RefreshToken
	err := s.RotateRefresh(ctx, "r1", true, now, func(old storage.RefreshToken) (storage.Issued, error) {
		seen = old
		return rotateTo("r2", now, exp.Add(time.Hour))(old)
	})
	if err != nil {
		t.Fatalf("RotateRefresh: %v", err)
	}
	if seen.JTI != "r1" || seen.GrantID != "g1" {
		t.Fatalf("mint got %+v, want the record of r1", seen)
	}
	wantAllowlisted(t, s, "r1", false)
	wantAllowlisted(t, s, "r2", true)

	// The rotated-away token is refused from now on.
	if err := s.RotateRefresh(ctx, "r1", true, now, rotateTo("r9", now, exp)); !errors.Is(err, storage.ErrNotFound) {
		t.Fatalf("RotateRefresh of a rotated-away token = %v, want ErrNotFound", err)
	}
	wantAllowlisted(t, s, "r9", false)

	// rotate=false keeps the old token and adds the new one.
	if err := s.RotateRefresh(ctx, "r2", false, now, rotateTo("r3", now, exp)); err != nil {
		t.Fatalf("RotateRefresh(rotate=false): %v", err)
	}
	wantAllowlisted(t, s, "r2", true)
	wantAllowlisted(t, s, "r3", true)

	// A mint may also update the grant (new scope, later expiry).
	err = s.RotateRefresh(ctx, "r3", true, now, func(old storage.RefreshToken) (storage.Issued, error) {
		r := old
		r.JTI = "r4"
		return storage.Issued{Grant: &storage.Grant{ID: "g1", Scope: "openid", SID: "sid", ExpiresAt: exp.Add(2 * time.Hour)}, Refresh: &r}, nil
	})
	if err != nil {
		t.Fatalf("RotateRefresh updating the grant: %v", err)
	}
	wantAllowlisted(t, s, "r4", true)
	// Revoking the grant reaches every token, old and new.
	if err := s.RevokeGrant(ctx, "g1", exp, now); err != nil {
		t.Fatalf("RevokeGrant: %v", err)
	}
	for _, jti := range []string{"r2", "r4"} {
		wantAllowlisted(t, s, jti, false)
	}
}

func testRefreshRotationRace(t *testing.T, s storage.Store) {
	ctx := context.Background()
	now := base()
	exp := now.Add(time.Hour)
	grantWithRefresh(t, s, "g", "sid", "r0", now, exp)

	const n = 20
	errs := make([]error, n)
	var wg sync.WaitGroup
	start := make(chan struct{})
	for i := range n {
		wg.Go(func() {
			<-start
			errs[i] = s.RotateRefresh(ctx, "r0", true, now, rotateTo(fmt.Sprintf("new-%d", i), now, exp))
		})
	}
	close(start)
	wg.Wait()
	winners := 0
	for i, err := range errs {
		switch {
		case err == nil:
			winners++
			wantAllowlisted(t, s, fmt.Sprintf("new-%d", i), true)
		case errors.Is(err, storage.ErrNotFound):
			wantAllowlisted(t, s, fmt.Sprintf("new-%d", i), false)
		default:
			t.Errorf("rotation %d: %v, want nil or ErrNotFound", i, err)
		}
	}
	if winners != 1 {
		t.Fatalf("%d of %d racing rotations won, want exactly 1", winners, n)
	}
	wantAllowlisted(t, s, "r0", false)
}

func testRefreshExpired(t *testing.T, s storage.Store) {
	ctx := context.Background()
	now := base()
	exp := now.Add(time.Hour)
	grantWithRefresh(t, s, "g", "sid", "r", now, exp)
	err := s.RotateRefresh(ctx, "r", true, exp, func(storage.RefreshToken) (storage.Issued, error) {
		t.Error("mint called for an expired refresh token")
		return storage.Issued{}, errMint
	})
	if !errors.Is(err, storage.ErrExpired) && !errors.Is(err, storage.ErrNotFound) {
		t.Fatalf("RotateRefresh at expiry = %v, want ErrExpired or ErrNotFound", err)
	}
}

func testRevokeGrant(t *testing.T, s storage.Store) {
	ctx := context.Background()
	now := base()
	exp := now.Add(time.Hour)
	grantWithRefresh(t, s, "g1", "sid", "a", now, exp)
	if err := s.RotateRefresh(ctx, "a", false, now, rotateTo("b", now, exp)); err != nil {
		t.Fatalf("RotateRefresh: %v", err)
	}
	grantWithRefresh(t, s, "g2", "sid", "other", now, exp)

	wantDenied(t, s, storage.DenyGrant, "g1", false)
	if err := s.RevokeGrant(ctx, "g1", exp, now); err != nil {
		t.Fatalf("RevokeGrant: %v", err)
	}
	wantAllowlisted(t, s, "a", false)
	wantAllowlisted(t, s, "b", false)
	wantAllowlisted(t, s, "other", true)
	wantDenied(t, s, storage.DenyGrant, "g1", true)
	wantDenied(t, s, storage.DenyJTI, "g1", false)
	wantDenied(t, s, storage.DenyGrant, "g2", false)
	if err := s.RotateRefresh(ctx, "a", true, now, rotateTo("c", now, exp)); !errors.Is(err, storage.ErrNotFound) {
		t.Fatalf("RotateRefresh on a revoked grant = %v, want ErrNotFound", err)
	}

	// Revoking again, or an unknown grant, is no error.
	for _, id := range []string{"g1", "never-existed"} {
		if err := s.RevokeGrant(ctx, id, exp, now); err != nil {
			t.Fatalf("RevokeGrant(%s): %v", id, err)
		}
	}
	wantDenied(t, s, storage.DenyGrant, "never-existed", true)
}

func testRevokeAccessToken(t *testing.T, s storage.Store) {
	ctx := context.Background()
	now := base()
	exp := now.Add(time.Hour)
	grantWithRefresh(t, s, "g1", "sid", "r1", now, exp)
	grantWithRefresh(t, s, "g2", "sid", "r2", now, exp)

	if err := s.RevokeAccessToken(ctx, "at1", "g1", now.Add(10*time.Minute), now); err != nil {
		t.Fatalf("RevokeAccessToken: %v", err)
	}
	wantDenied(t, s, storage.DenyJTI, "at1", true)
	wantDenied(t, s, storage.DenyGrant, "at1", false)
	wantAllowlisted(t, s, "r1", false)
	wantAllowlisted(t, s, "r2", true)

	// client_credentials tokens have no grant.
	if err := s.RevokeAccessToken(ctx, "at2", "", now.Add(10*time.Minute), now); err != nil {
		t.Fatalf("RevokeAccessToken without grant: %v", err)
	}
	wantDenied(t, s, storage.DenyJTI, "at2", true)
	wantAllowlisted(t, s, "r2", true)
}

func testRevokeSID(t *testing.T, s storage.Store) {
	ctx := context.Background()
	now := base()
	exp := now.Add(time.Hour)
	grantWithRefresh(t, s, "ga", "s1", "ra", now, exp)
	grantWithRefresh(t, s, "gb", "s1", "rb", now, exp)
	grantWithRefresh(t, s, "gc", "s2", "rc", now, exp)

	ids, err := s.RevokeSID(ctx, "s1", exp, now)
	if err != nil {
		t.Fatalf("RevokeSID: %v", err)
	}
	slices.Sort(ids)
	if !reflect.DeepEqual(ids, []string{"ga", "gb"}) {
		t.Fatalf("RevokeSID returned %v, want [ga gb]", ids)
	}
	wantAllowlisted(t, s, "ra", false)
	wantAllowlisted(t, s, "rb", false)
	wantAllowlisted(t, s, "rc", true)
	wantDenied(t, s, storage.DenyGrant, "ga", true)
	wantDenied(t, s, storage.DenyGrant, "gb", true)
	wantDenied(t, s, storage.DenyGrant, "gc", false)

	ids, err = s.RevokeSID(ctx, "s1", exp, now)
	if err != nil || len(ids) != 0 {
		t.Fatalf("second RevokeSID = %v, %v; want none", ids, err)
	}
	ids, err = s.RevokeSID(ctx, "unknown", exp, now)
	if err != nil || len(ids) != 0 {
		t.Fatalf("RevokeSID(unknown) = %v, %v; want none", ids, err)
	}
}

func testDenylistChanges(t *testing.T, s storage.Store) {
	ctx := context.Background()
	now := base()
	got, cur, err := s.DenylistChanges(ctx, 0, 0)
	if err != nil || len(got) != 0 {
		t.Fatalf("DenylistChanges on an empty store = %v, %v", got, err)
	}
	want := []storage.DenyEntry{
		{Kind: storage.DenyJTI, ID: "j1", Until: now.Add(time.Minute)},
		{Kind: storage.DenyGrant, ID: "g1", Until: now.Add(time.Hour)},
		{Kind: storage.DenyJTI, ID: "j2", Until: now.Add(2 * time.Hour)},
	}
	if err := s.RevokeAccessToken(ctx, "j1", "", want[0].Until, now); err != nil {
		t.Fatal(err)
	}
	if err := s.RevokeGrant(ctx, "g1", want[1].Until, now); err != nil {
		t.Fatal(err)
	}
	if err := s.RevokeAccessToken(ctx, "j2", "", want[2].Until, now); err != nil {
		t.Fatal(err)
	}

	all, end, err := s.DenylistChanges(ctx, 0, 0)
	if err != nil || !entriesEqual(all, want) {
		t.Fatalf("DenylistChanges(0) = %+v, %v\nwant %+v", all, err, want)
	}
	if end <= cur {
		t.Fatalf("cursor did not advance: %d -> %d", cur, end)
	}

	// Paging: limit 2, then the rest.
	page, c2, err := s.DenylistChanges(ctx, 0, 2)
	if err != nil || !entriesEqual(page, want[:2]) {
		t.Fatalf("DenylistChanges(0, 2) = %+v, %v", page, err)
	}
	page, c3, err := s.DenylistChanges(ctx, c2, 2)
	if err != nil || !entriesEqual(page, want[2:]) || c3 != end {
		t.Fatalf("DenylistChanges(%d, 2) = %+v, %d, %v; want the last entry and cursor %d", c2, page, c3, err, end)
	}
	page, c4, err := s.DenylistChanges(ctx, end, 0)
	if err != nil || len(page) != 0 || c4 != end {
		t.Fatalf("DenylistChanges at the end = %+v, %d, %v; want nothing and the same cursor", page, c4, err)
	}

	// A new entry after the cursor, and nothing older.
	e4 := storage.DenyEntry{Kind: storage.DenyJTI, ID: "j3", Until: now.Add(time.Hour)}
	if err := s.RevokeAccessToken(ctx, "j3", "", e4.Until, now); err != nil {
		t.Fatal(err)
	}
	page, _, err = s.DenylistChanges(ctx, end, 0)
	if err != nil || !entriesEqual(page, []storage.DenyEntry{e4}) {
		t.Fatalf("DenylistChanges after new entry = %+v, %v", page, err)
	}

	// After Purge the zero cursor returns every live entry, no more.
	if _, err := s.Purge(ctx, now.Add(10*time.Minute)); err != nil {
		t.Fatal(err)
	}
	live, _, err := s.DenylistChanges(ctx, 0, 0)
	if err != nil || !entriesEqual(live, []storage.DenyEntry{want[1], want[2], e4}) {
		t.Fatalf("DenylistChanges(0) after purge = %+v, %v", live, err)
	}
}

func entriesEqual(a, b []storage.DenyEntry) bool {
	return slices.EqualFunc(a, b, func(x, y storage.DenyEntry) bool {
		return x.Kind == y.Kind && x.ID == y.ID && x.Until.Equal(y.Until)
	})
}

func testPurge(t *testing.T, s storage.Store) {
	ctx := context.Background()
	now := base()
	soon, later := now.Add(time.Minute), now.Add(time.Hour)
	purgeAt := now.Add(10 * time.Minute)

	// Codes.
	cSoon, cLater := newCode("c-soon", "", now), newCode("c-later", "", now)
	cSoon.ExpiresAt, cLater.ExpiresAt = soon, later
	for _, c := range []storage.AuthCode{cSoon, cLater} {
		if err := s.CreateCode(ctx, c); err != nil {
			t.Fatal(err)
		}
	}
	// Login sessions.
	for _, ls := range []storage.LoginSession{{ID: "ls-soon", Subject: "a", AuthTime: now, ExpiresAt: soon}, {ID: "ls-later", Subject: "a", AuthTime: now, ExpiresAt: later}} {
		if err := s.CreateLoginSession(ctx, ls); err != nil {
			t.Fatal(err)
		}
	}
	// Denylist entries.
	if err := s.RevokeAccessToken(ctx, "j-soon", "", soon, now); err != nil {
		t.Fatal(err)
	}
	if err := s.RevokeAccessToken(ctx, "j-later", "", later, now); err != nil {
		t.Fatal(err)
	}
	// Grant gs expires with its only refresh token; grant gl keeps one
	// live token after losing an expired one.
	grantWithRefresh(t, s, "gs", "sid-s", "r-soon", now, soon)
	grantWithRefresh(t, s, "gl", "sid-l", "r-later", now, later)
	if err := s.RotateRefresh(ctx, "r-later", false, now, rotateTo("r-l-soon", now, soon)); err != nil {
		t.Fatal(err)
	}

	// Nothing has expired yet.
	if n, err := s.Purge(ctx, now); err != nil || n != 0 {
		t.Fatalf("Purge(now) = %d, %v; want 0", n, err)
	}
	n, err := s.Purge(ctx, purgeAt)
	if err != nil {
		t.Fatalf("Purge: %v", err)
	}
	// 3 codes (c-soon and the two redeemed ones grantWithRefresh made,
	// which expire a minute after now) + login session + denylist entry +
	// 2 refresh tokens + grant gs.
	if n != 8 {
		t.Errorf("Purge removed %d records, want 8", n)
	}

	_, err = s.RedeemCode(ctx, cSoon.Hash, now, mintFor("x", "", now, later))
	if !errors.Is(err, storage.ErrNotFound) {
		t.Errorf("purged code: RedeemCode = %v, want ErrNotFound", err)
	}
	if _, err := s.RedeemCode(ctx, cLater.Hash, now, mintFor("y", "", now, later)); err != nil {
		t.Errorf("live code: RedeemCode = %v", err)
	}
	if _, err := s.LoginSession(ctx, "ls-soon"); !errors.Is(err, storage.ErrNotFound) {
		t.Errorf("purged login session: %v, want ErrNotFound", err)
	}
	if _, err := s.LoginSession(ctx, "ls-later"); err != nil {
		t.Errorf("live login session: %v", err)
	}
	wantDenied(t, s, storage.DenyJTI, "j-soon", false)
	wantDenied(t, s, storage.DenyJTI, "j-later", true)
	wantAllowlisted(t, s, "r-soon", false)
	wantAllowlisted(t, s, "r-l-soon", false)
	wantAllowlisted(t, s, "r-later", true)
	// The grant gs is gone (its login session finds no grant); gl stays.
	if ids, err := s.RevokeSID(ctx, "sid-s", later, now); err != nil || len(ids) != 0 {
		t.Errorf("RevokeSID of the purged grant's session = %v, %v; want none", ids, err)
	}
	if ids, err := s.RevokeSID(ctx, "sid-l", later, now); err != nil || !reflect.DeepEqual(ids, []string{"gl"}) {
		t.Errorf("RevokeSID of the live grant's session = %v, %v; want [gl]", ids, err)
	}

	if n, err := s.Purge(ctx, purgeAt); err != nil || n != 0 {
		t.Fatalf("second Purge = %d, %v; want 0", n, err)
	}
}

func testLoginSessions(t *testing.T, s storage.Store) {
	ctx := context.Background()
	now := base()
	ls := storage.LoginSession{ID: "ls1", Subject: "alice", AuthTime: now, ExpiresAt: now.Add(8 * time.Hour)}
	if _, err := s.LoginSession(ctx, ls.ID); !errors.Is(err, storage.ErrNotFound) {
		t.Fatalf("LoginSession before create = %v, want ErrNotFound", err)
	}
	if err := s.CreateLoginSession(ctx, ls); err != nil {
		t.Fatalf("CreateLoginSession: %v", err)
	}
	if err := s.CreateLoginSession(ctx, ls); !errors.Is(err, storage.ErrAlreadyExists) {
		t.Fatalf("second CreateLoginSession = %v, want ErrAlreadyExists", err)
	}
	got, err := s.LoginSession(ctx, ls.ID)
	if err != nil || !reflect.DeepEqual(got, ls) {
		t.Fatalf("LoginSession = %+v, %v; want %+v", got, err, ls)
	}
	if err := s.DeleteLoginSession(ctx, ls.ID); err != nil {
		t.Fatalf("DeleteLoginSession: %v", err)
	}
	if _, err := s.LoginSession(ctx, ls.ID); !errors.Is(err, storage.ErrNotFound) {
		t.Fatalf("LoginSession after delete = %v, want ErrNotFound", err)
	}
	if err := s.DeleteLoginSession(ctx, ls.ID); err != nil {
		t.Fatalf("DeleteLoginSession of a deleted session: %v", err)
	}
}

func testPing(t *testing.T, s storage.Store) {
	if err := s.Ping(context.Background()); err != nil {
		t.Fatalf("Ping: %v", err)
	}
}
