package issuer

import (
	"context"
	"crypto/sha256"
	"encoding/base64"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"strconv"
	"strings"
	"time"

	"github.com/gofiber/fiber/v2"

	"github.com/bffgate/bffgate/internal/obs"
	"github.com/bffgate/bffgate/issuer/storage"
)

// LoginThrottle configures the login form's brute-force protection: RFC
// 6749 §10.10 requires the authorization server to prevent the guessing of
// resource owner passwords, the OWASP Authentication Cheat Sheet describes
// it as account lockout, Keycloak as brute force detection. Failed logins
// are counted per username and per client address in the issuer's store,
// so every instance sharing the store sees the same counts.
//
// MaxFailures failed logins for one username within Window (counted from
// the first) lock that username for Lockout; each further lockout before
// the username has been quiet for Window after the last one ended doubles
// the wait, up to MaxLockout. A successful login clears the username's
// count. Independently, MaxIPFailures failed logins from one client
// address within Window lock that address, whatever the usernames (the
// defence against password spraying), with the same waits; a success does
// not clear an address's count, so a guesser with one valid account cannot
// wipe it.
//
// While a username or address is locked, the login form refuses every
// attempt without checking the password (no hash is computed) and says so
// with 429 Too Many Requests and Retry-After. Unknown usernames are
// counted and locked exactly like known ones, so a lockout reveals nothing
// about which usernames exist.
//
// The zero value is the protection on, with the defaults below.
type LoginThrottle struct {
	// Disable turns the protection off: nothing is counted or refused.
	Disable bool
	// MaxFailures (default 5) failures lock a username.
	MaxFailures int
	// Window (default 15m) is how long a count lasts from its first
	// failure, and how long lockouts are remembered after the last one.
	Window time.Duration
	// Lockout (default 1m) is the first lockout's length; MaxLockout
	// (default 15m) caps the doubling.
	Lockout    time.Duration
	MaxLockout time.Duration
	// MaxIPFailures (default 50) failures from one client address lock
	// the address. The address is the TCP peer's (IPv6: its /64, which
	// one client usually holds whole); X-Forwarded-For is not read. Behind
	// a reverse proxy every client has the proxy's address, so the limit
	// would lock everyone at once: set DisableIPLimit there.
	MaxIPFailures int
	// DisableIPLimit turns off the per-address limit only.
	DisableIPLimit bool
}

// Defaults of LoginThrottle filled in by New.
const (
	DefaultLoginMaxFailures   = 5
	DefaultLoginWindow        = 15 * time.Minute
	DefaultLoginLockout       = time.Minute
	DefaultLoginMaxLockout    = 15 * time.Minute
	DefaultLoginMaxIPFailures = 50
)

// withDefaults fills in lt's defaults and validates it; an error names
// the field (login_throttle.window).
func (lt LoginThrottle) withDefaults() (LoginThrottle, *fieldError) {
	fail := func(field, format string, args ...any) (LoginThrottle, *fieldError) {
		return LoginThrottle{}, &fieldError{field: "login_throttle." + field, msg: fmt.Sprintf(format, args...)}
	}
	for _, n := range []struct {
		field string
		v     *int
		def   int
	}{
		{"max_failures", &lt.MaxFailures, DefaultLoginMaxFailures},
		{"max_ip_failures", &lt.MaxIPFailures, DefaultLoginMaxIPFailures},
	} {
		if *n.v < 0 {
			return fail(n.field, "is negative (%d); 0 means the default, %d", *n.v, n.def)
		}
		if *n.v == 0 {
			*n.v = n.def
		}
	}
	for _, d := range []struct {
		field string
		v     *time.Duration
		def   time.Duration
	}{
		{"window", &lt.Window, DefaultLoginWindow},
		{"lockout", &lt.Lockout, DefaultLoginLockout},
		{"max_lockout", &lt.MaxLockout, DefaultLoginMaxLockout},
	} {
		if *d.v < 0 {
			return fail(d.field, "is negative (%s); 0 means the default, %s", *d.v, d.def)
		}
		if *d.v == 0 {
			*d.v = d.def
		}
		if *d.v < time.Second {
			return fail(d.field, "is %s; it must be at least 1s", *d.v)
		}
	}
	if lt.MaxLockout < lt.Lockout {
		return fail("max_lockout", "is %s, shorter than lockout (%s); it caps the doubling of lockout, so it must be at least as long", lt.MaxLockout, lt.Lockout)
	}
	return lt, nil
}

// Throttle scopes: the label of the throttle metrics and log lines.
const (
	scopeUsername = "username"
	scopeAddress  = "address"
)

// throttleKey is one counter a login attempt is checked and counted
// against.
type throttleKey struct {
	scope  string
	key    string
	policy storage.LoginPolicy
}

// loginLock is the lock that refuses an attempt.
type loginLock struct {
	scope string
	until time.Time
}

// throttleKeys returns the counters of an attempt to log in as username
// from c's client: the username's, then the address's (when that limit is
// on and the peer has an IP address). None when the throttle is off.
func (s *Server) throttleKeys(c *fiber.Ctx, username string) []throttleKey {
	lt := s.cfg.LoginThrottle
	if lt.Disable {
		return nil
	}
	p := storage.LoginPolicy{MaxFailures: lt.MaxFailures, Window: lt.Window, Lockout: lt.Lockout, MaxLockout: lt.MaxLockout}
	keys := []throttleKey{{scope: scopeUsername, key: usernameKey(username), policy: p}}
	if addr, ok := clientAddr(c); ok && !lt.DisableIPLimit {
		p.MaxFailures = lt.MaxIPFailures
		keys = append(keys, throttleKey{scope: scopeAddress, key: addressKey(addr), policy: p})
	}
	return keys
}

// usernameKey is the store key of a username's counter: the SHA-256 of
// the username in lower case. The store never holds the username itself,
// and every key has the same length whatever was typed.
//
// Folding the case merges counters, never splits them: the login looks a
// username up exactly, so each username that can log in has exactly one
// counter, and "Alice" counts against "alice" (as in Keycloak, which
// lower-cases usernames).
func usernameKey(username string) string {
	return "u:" + throttleDigest("username", strings.ToLower(username))
}

// addressKey is the store key of a client address's counter.
func addressKey(addr netip.Prefix) string {
	return "a:" + throttleDigest("address", addr.String())
}

// throttleDigest hashes v with its kind in front, so that a username can
// never collide with an address.
func throttleDigest(kind, v string) string {
	h := sha256.New()
	h.Write([]byte("bffgate login throttle\x00" + kind + "\x00"))
	h.Write([]byte(v))
	return base64.RawURLEncoding.EncodeToString(h.Sum(nil))
}

// clientAddr is the TCP peer's address as the prefix that is counted: the
// address itself for IPv4, its /64 for IPv6 (a client that holds a /64
// could otherwise step through its addresses to dodge the limit).
func clientAddr(c *fiber.Ctx) (netip.Prefix, bool) {
	ta, ok := c.Context().RemoteAddr().(*net.TCPAddr)
	if !ok {
		return netip.Prefix{}, false
	}
	ip, ok := netip.AddrFromSlice(ta.IP)
	if !ok || ip.IsUnspecified() {
		return netip.Prefix{}, false
	}
	ip = ip.Unmap()
	bits := 32
	if ip.Is6() {
		bits = 64
	}
	p, err := ip.Prefix(bits)
	return p, err == nil
}

// clientIP is the peer's address for log lines ("" when it has none).
func clientIP(c *fiber.Ctx) string {
	if ta, ok := c.Context().RemoteAddr().(*net.TCPAddr); ok {
		if ip, ok := netip.AddrFromSlice(ta.IP); ok {
			return ip.Unmap().String()
		}
	}
	return ""
}

// throttleCheck reports the lock, if any, that refuses an attempt against
// keys before its password is checked. When both the username and the
// address are locked it reports the one that ends later: that is how long
// the user has to wait.
func (s *Server) throttleCheck(ctx context.Context, keys []throttleKey, now time.Time) (*loginLock, error) {
	var lock *loginLock
	for _, k := range keys {
		f, err := s.cfg.Store.LoginFailures(ctx, k.key, now)
		if err != nil {
			return nil, fmt.Errorf("issuer: read the login throttle (%s): %w", k.scope, err)
		}
		lock = laterLock(lock, k.scope, f, now)
	}
	return lock, nil
}

// throttleFailure counts a failed login against keys. It returns the lock
// the failure ran into or started, if any: the answer then says so.
func (s *Server) throttleFailure(c *fiber.Ctx, keys []throttleKey, username string, now time.Time) (*loginLock, error) {
	ctx := c.UserContext()
	var lock *loginLock
	for _, k := range keys {
		f, err := s.cfg.Store.RecordLoginFailure(ctx, k.key, now, k.policy)
		if err != nil {
			return nil, fmt.Errorf("issuer: count a failed login (%s): %w", k.scope, err)
		}
		if f.Started {
			s.metrics.lockouts.WithLabelValues(k.scope).Inc()
			// Warn: a lockout is what an operator looks for first when
			// a user cannot log in, or when someone is guessing.
			s.log.LogAttrs(ctx, slog.LevelWarn, "login locked: too many failed logins",
				slog.String("scope", k.scope), slog.String("username", clip(username, 64)), slog.String("client_ip", clientIP(c)),
				slog.Int("lockouts", f.Lockouts), slog.Duration("lockout", f.LockedUntil.Sub(now)),
				slog.Time("locked_until", f.LockedUntil), slog.String("request_id", obs.RequestID(c)))
		}
		lock = laterLock(lock, k.scope, f, now)
	}
	return lock, nil
}

// throttleSuccess checks a login whose password was right: the address
// must not be locked (by failures that raced with this attempt), and the
// username's counter is cleared unless it is locked. A lock found here
// refuses the login like one found before the check, so that a correct
// guess among parallel ones cannot be told from a wrong one.
func (s *Server) throttleSuccess(ctx context.Context, keys []throttleKey, now time.Time) (*loginLock, error) {
	var lock *loginLock
	for _, k := range keys {
		if k.scope != scopeUsername {
			f, err := s.cfg.Store.LoginFailures(ctx, k.key, now)
			if err != nil {
				return nil, fmt.Errorf("issuer: read the login throttle (%s): %w", k.scope, err)
			}
			lock = laterLock(lock, k.scope, f, now)
		}
	}
	if lock != nil {
		return lock, nil
	}
	for _, k := range keys {
		if k.scope == scopeUsername {
			f, err := s.cfg.Store.ResetLoginFailures(ctx, k.key, now)
			if err != nil {
				return nil, fmt.Errorf("issuer: clear the login throttle (%s): %w", k.scope, err)
			}
			lock = laterLock(lock, k.scope, f, now)
		}
	}
	return lock, nil
}

func laterLock(cur *loginLock, scope string, f storage.LoginFailures, now time.Time) *loginLock {
	if !f.Locked(now) || (cur != nil && !f.LockedUntil.After(cur.until)) {
		return cur
	}
	return &loginLock{scope: scope, until: f.LockedUntil}
}

// refuseLocked answers a login attempt that a lock refused, or whose
// failure started or ran into one: the login form again, with the wrong
// password's message and the wait, as 429 Too Many Requests (RFC 6585 §4)
// with Retry-After. The answer depends only on the lock's end, never on
// whether the username exists or the password was checked.
func (s *Server) refuseLocked(c *fiber.Ctx, req authRequest, username string, l *loginLock, now time.Time) error {
	wait := max(l.until.Sub(now), time.Second)
	minutes := int((wait + time.Minute - 1) / time.Minute)
	unit := "minutes"
	if minutes == 1 {
		unit = "minute"
	}
	c.Set(fiber.HeaderRetryAfter, strconv.Itoa(int((wait+time.Second-1)/time.Second)))
	msg := fmt.Sprintf("%s Too many failed sign-in attempts: try again in %d %s.", msgWrongPassword, minutes, unit)
	return s.renderLogin(c, req, clip(username, 256), msg, fiber.StatusTooManyRequests)
}

// msgWrongPassword is the login form's one message for a wrong password
// and an unknown username alike.
const msgWrongPassword = "Wrong username or password."
