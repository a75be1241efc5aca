package issuer

import (
	"bytes"
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
// The zero value is the protection on, with the defaults below. The yaml
// tags are the keys of bffgate's issuer.login_throttle.
type LoginThrottle struct {
	// Disable turns the protection off: nothing is counted or refused.
	Disable bool `yaml:"disable"`
	// MaxFailures (default 5) failures lock a username.
	MaxFailures int `yaml:"max_failures"`
	// Window (default 15m) is how long a count lasts from its first
	// failure, and how long lockouts are remembered after the last one.
	Window time.Duration `yaml:"window"`
	// Lockout (default 1m) is the first lockout's length; MaxLockout
	// (default 15m) caps the doubling.
	Lockout    time.Duration `yaml:"lockout"`
	MaxLockout time.Duration `yaml:"max_lockout"`
	// MaxIPFailures (default 50) failures from one client address lock
	// the address. The address is the TCP peer's, or, when the peer is one
	// of Config.TrustedProxies, the client X-Forwarded-For names (IPv6:
	// its /64, which one client usually holds whole). Behind a reverse
	// proxy that is not listed there every client has the proxy's
	// address, so the limit would lock everyone at once: list the proxy
	// in Config.TrustedProxies, or set DisableIPLimit.
	MaxIPFailures int `yaml:"max_ip_failures"`
	// DisableIPLimit turns off the per-address limit only.
	DisableIPLimit bool `yaml:"disable_ip_limit"`
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
// on and the client has an IP address). None when the throttle is off.
//
// It resolves the client address first, whether or not the throttle is on,
// so that the log lines of the login (clientIP) name the client rather
// than a proxy.
func (s *Server) throttleKeys(c *fiber.Ctx, username string) []throttleKey {
	ip := s.clientAddr(c)
	lt := s.cfg.LoginThrottle
	if lt.Disable {
		return nil
	}
	p := storage.LoginPolicy{MaxFailures: lt.MaxFailures, Window: lt.Window, Lockout: lt.Lockout, MaxLockout: lt.MaxLockout}
	keys := []throttleKey{{scope: scopeUsername, key: usernameKey(username), policy: p}}
	if addr, ok := addressPrefix(ip); ok && !lt.DisableIPLimit {
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

// addressPrefix is the prefix of a client address that is counted: the
// address itself for IPv4, its /64 for IPv6 (a client that holds a /64
// could otherwise step through its addresses to dodge the limit). None for
// a missing or unspecified address.
func addressPrefix(ip netip.Addr) (netip.Prefix, bool) {
	if !ip.IsValid() || ip.IsUnspecified() {
		return netip.Prefix{}, false
	}
	bits := 32
	if ip.Is6() {
		bits = 64
	}
	p, err := ip.Prefix(bits)
	return p, err == nil
}

// clientAddrLocal is the c.Locals key of the client address clientAddr
// resolved for the request.
type clientAddrLocal struct{}

// clientAddr is the address of the client that sent c's request (the zero
// Addr when the connection has none): the TCP peer's, unless the peer is
// one of Config.TrustedProxies, then the one its X-Forwarded-For names
// (forwardedClient). It is resolved once per request and kept in c.Locals,
// where clientIP finds it for log lines.
func (s *Server) clientAddr(c *fiber.Ctx) netip.Addr {
	if ip, ok := c.Locals(clientAddrLocal{}).(netip.Addr); ok {
		return ip
	}
	ip := peerAddr(c)
	if ip.IsValid() && s.trustedProxy(ip) {
		ip = s.forwardedClient(c.Request().Header.PeekAll(fiber.HeaderXForwardedFor), ip)
	}
	c.Locals(clientAddrLocal{}, ip)
	return ip
}

// peerAddr is the TCP peer's address (IPv4-mapped IPv6 unmapped), or the
// zero Addr.
func peerAddr(c *fiber.Ctx) netip.Addr {
	if ta, ok := c.Context().RemoteAddr().(*net.TCPAddr); ok {
		if ip, ok := netip.AddrFromSlice(ta.IP); ok {
			return ip.Unmap()
		}
	}
	return netip.Addr{}
}

// trustedProxy reports whether ip is one of Config.TrustedProxies.
func (s *Server) trustedProxy(ip netip.Addr) bool {
	for _, p := range s.cfg.trustedProxies {
		if p.Contains(ip) {
			return true
		}
	}
	return false
}

// forwardedClient is the client a trusted peer's X-Forwarded-For names:
// walking the list from the right (the entry the peer appended) to the
// left, the first address that is not itself a trusted proxy; when every
// entry is a trusted proxy, the left-most; when there are none, the peer.
// lines are the header's field lines in the order received, one list
// (RFC 9110 §5.3): HAProxy, for one, adds its own line rather than append
// to the client's, so reading only the first line would read the client's.
//
// Only the right end is believed because every hop appends the address it
// received the request from, so each entry is as good as the hop to its
// right: the entries a trusted proxy wrote name who connected to it, those
// further left are whatever the client sent. The walk stops at the first
// untrusted address because that party could have written everything to
// its left.
//
// A malformed entry stops the walk too, and the client is the last good
// hop, the trusted proxy to its right (the peer when it is the right-most
// entry). Skipping it instead would hand the choice to whoever wrote it:
// "X-Forwarded-For: 192.0.2.1, junk" would count against an address of the
// sender's choosing, a fresh one per attempt. Counted against the proxy,
// such requests share one counter (and lock only each other, not the
// clients whose address resolves). A proxy that writes "unknown" for a
// client it cannot name puts that client in this shared counter too.
//
// Forwarded (RFC 7239) and X-Real-Ip are not read: a proxy that maintains
// only X-Forwarded-For passes them on as the client wrote them, and which
// header a given proxy maintains is not something the issuer can tell.
func (s *Server) forwardedClient(lines [][]byte, peer netip.Addr) netip.Addr {
	client := peer
	for i := len(lines) - 1; i >= 0; i-- {
		line := lines[i]
		for len(line) > 0 {
			var hop []byte
			if j := bytes.LastIndexByte(line, ','); j >= 0 {
				hop, line = line[j+1:], line[:j]
			} else {
				hop, line = line, nil
			}
			hop = bytes.Trim(hop, " \t")
			if len(hop) == 0 {
				continue // empty list elements are ignored (RFC 9110 §5.6.1)
			}
			ip, ok := parseHop(hop)
			if !ok {
				return client
			}
			client = ip
			if !s.trustedProxy(ip) {
				return ip
			}
		}
	}
	return client
}

// parseHop parses one X-Forwarded-For entry: an IP address, or one with a
// port as some load balancers write it (192.0.2.1:4711,
// [2001:db8::1]:4711). The unspecified address is not a client's.
func parseHop(b []byte) (netip.Addr, bool) {
	s := string(b)
	ip, err := netip.ParseAddr(s)
	if err != nil {
		ap, err := netip.ParseAddrPort(s)
		if err != nil {
			return netip.Addr{}, false
		}
		ip = ap.Addr()
	}
	// No zone: it would let one address be written many ways.
	ip = ip.Unmap().WithZone("")
	if ip.IsUnspecified() {
		return netip.Addr{}, false
	}
	return ip, true
}

// parseTrustedProxies parses Config.TrustedProxies: CIDRs or IPs, as the
// gateway's proxy.Config.TrustedProxies takes them. A /0 is refused:
// trusting every address would let any client choose, in X-Forwarded-For,
// the address its failures count against.
func parseTrustedProxies(list []string) ([]netip.Prefix, *fieldError) {
	out := make([]netip.Prefix, 0, len(list))
	for i, s := range list {
		field := fmt.Sprintf("trusted_proxies[%d]", i)
		var p netip.Prefix
		if strings.Contains(s, "/") {
			pp, err := netip.ParsePrefix(s)
			if err != nil {
				return nil, &fieldError{field: field, msg: fmt.Sprintf("%q is not a CIDR (want an IP or a CIDR such as 10.0.0.0/8 or 2001:db8::/32)", s)}
			}
			p = pp.Masked()
			// Peers are compared unmapped: an IPv4-mapped prefix would
			// match none of them.
			if p.Addr().Is4In6() && p.Bits() >= 96 {
				p = netip.PrefixFrom(p.Addr().Unmap(), p.Bits()-96)
			}
		} else {
			ip, err := netip.ParseAddr(s)
			if err != nil {
				return nil, &fieldError{field: field, msg: fmt.Sprintf("%q is neither an IP nor a CIDR (want e.g. 192.0.2.7 or 10.0.0.0/8)", s)}
			}
			ip = ip.Unmap().WithZone("")
			p = netip.PrefixFrom(ip, ip.BitLen())
		}
		if p.Bits() == 0 {
			return nil, &fieldError{field: field, msg: fmt.Sprintf("%q trusts every address, so any client could choose in X-Forwarded-For the address its failed logins count against; list your proxies' addresses, or set login_throttle.disable_ip_limit", s)}
		}
		out = append(out, p)
	}
	return out, nil
}

// clientIP is the request's client address for log lines ("" when it has
// none), as the throttle counts it (clientAddr).
func (s *Server) clientIP(c *fiber.Ctx) string {
	ip := s.clientAddr(c)
	if !ip.IsValid() {
		return ""
	}
	return ip.String()
}

// throttleCheck reports the lock, if any, that refuses an attempt against
// keys before its password is checked. When both the username and the
// address are locked it reports the one that ends later: that is how long
// the user has to wait.
func (s *Server) throttleCheck(ctx context.Context, keys []throttleKey, now time.Time) (*loginLock, error) {
	var lock *loginLock
	for _, k := range keys {
		f, err := s.stores.throttle.LoginFailures(ctx, k.key, now)
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
		f, err := s.stores.throttle.RecordLoginFailure(ctx, k.key, now, k.policy)
		if err != nil {
			return nil, fmt.Errorf("issuer: count a failed login (%s): %w", k.scope, err)
		}
		if f.Started {
			s.metrics.lockouts.WithLabelValues(k.scope).Inc()
			// Warn: a lockout is what an operator looks for first when
			// a user cannot log in, or when someone is guessing.
			s.log.LogAttrs(ctx, slog.LevelWarn, "login locked: too many failed logins",
				slog.String("scope", k.scope), slog.String("username", clip(username, 64)), slog.String("client_ip", s.clientIP(c)),
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
			f, err := s.stores.throttle.LoginFailures(ctx, k.key, now)
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
			f, err := s.stores.throttle.ResetLoginFailures(ctx, k.key, now)
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
