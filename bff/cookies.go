package bff

import (
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/gofiber/fiber/v2"

	"github.com/bffgate/bffgate/bff/proxy"
)

// chunkSize is the most bytes of handle one cookie carries. Browsers keep
// at least 4096 bytes per cookie (RFC 6265 section 6.1) counting name and
// attributes; 3,800 leaves room for both.
const chunkSize = 3800

// maxChunks bounds how many chunk cookies are read back (and cleared): a
// request cannot make the gateway walk an unbounded list.
const maxChunks = 16

// cookieJar writes and reads the gateway's cookies with one set of
// attributes.
type cookieJar struct {
	name     string // session cookie name; chunks are name.1, name.2...
	flowPfx  string // flow cookie prefix: name + "-flow."
	secure   bool
	sameSite string // fiber.CookieSameSiteLaxMode or StrictMode
	// path is every cookie's Path: "/", or the frontend's path prefix, so
	// that the browser sends a frontend's cookies to it alone.
	path string
	// handles keeps the handles readHandle joined lately (nil: none).
	handles *handleCache
}

func newCookieJar(name, sameSite string, secure bool, path string) cookieJar {
	ss := fiber.CookieSameSiteLaxMode
	if strings.EqualFold(sameSite, "strict") {
		ss = fiber.CookieSameSiteStrictMode
	}
	if path == "" {
		path = "/"
	}
	return cookieJar{name: name, flowPfx: name + "-flow.", secure: secure, sameSite: ss, path: path, handles: new(handleCache)}
}

func (j cookieJar) chunkName(i int) string {
	if i == 0 {
		return j.name
	}
	return j.name + "." + strconv.Itoa(i)
}

// set writes one cookie. expires zero makes a browser-session cookie.
func (j cookieJar) set(c *fiber.Ctx, name, value string, expires time.Time) {
	ck := &fiber.Cookie{
		Name:     name,
		Value:    value,
		Path:     j.path,
		Secure:   j.secure,
		HTTPOnly: true,
		SameSite: j.sameSite,
	}
	if expires.IsZero() {
		ck.SessionOnly = true
	} else {
		ck.Expires = expires
	}
	c.Cookie(ck)
}

// clear expires one cookie. The Set-Cookie carries the same Secure and Path
// attributes as the original: browsers ignore a __Host- Set-Cookie without
// them, deletion included.
func (j cookieJar) clear(c *fiber.Ctx, name string) {
	c.Cookie(&fiber.Cookie{
		Name:     name,
		Value:    "",
		Path:     j.path,
		Expires:  time.Unix(1, 0),
		Secure:   j.secure,
		HTTPOnly: true,
		SameSite: j.sameSite,
	})
}

// readHandle reassembles the session handle from the base cookie and its
// numbered chunks, in order, stopping at the first missing one. It returns
// "" when there is no session cookie. Of cookies sent twice under one
// name, the first counts (as fiber's Cookies has it). It scans the raw
// Cookie headers (proxy.EachCookie) rather than asking fiber for each
// name, which would parse and copy every cookie first: this runs on every
// API call, with a 5 KB header for cookie sessions.
func (j cookieJar) readHandle(c *fiber.Ctx) string {
	var parts [maxChunks][]byte
	var seen [maxChunks]bool
	for _, h := range c.Request().Header.PeekAll(fiber.HeaderCookie) {
		proxy.EachCookie(h, func(name, value []byte) bool {
			if i, ok := j.chunkIndex(name); ok && !seen[i] {
				parts[i], seen[i] = value, true
			}
			return true
		})
	}
	n := 0
	for i := range parts {
		if len(parts[i]) == 0 {
			break
		}
		n += len(parts[i])
	}
	if n == 0 {
		return ""
	}
	return j.handles.join(parts[:], n) // a string of its own: safe beyond the handler
}

// handleCache keeps the session handles readHandle joined lately, so that
// a browser's next request with the same cookie gets the same string
// instead of a new copy of its bytes. A cookie session's handle is the
// whole session (4 KB with RS256 tokens, in two cookies): copied on every
// request, it made the garbage collector's work per proxied call grow
// with it (issue 20: a fifth of the cookie store's instructions beyond
// bbolt's). Strings are immutable, so handing the same one to several
// requests is what a fresh copy of the same bytes would be; a slot is
// used only after its handle compared equal to the request's cookies,
// byte for byte. Slots are picked by a hash of the handle's last bytes
// (a MAC or random bytes): a colliding cookie replaces the slot's
// handle, which costs the next request of the other one a copy, never a
// wrong answer.
type handleCache struct {
	slots [handleSlots]atomic.Pointer[string]
}

const (
	// handleSlots is how many handles are kept: a few hundred browsers
	// calling in the same moment mostly hit.
	handleSlots = 512
	// maxCachedHandle bounds what a slot keeps (two chunks; 4 MiB in
	// all at most).
	maxCachedHandle = 8 << 10
)

// join returns the concatenation of parts up to the first empty one, n
// bytes long (n > 0), from the cache when a slot holds it. A nil cache
// joins.
func (hc *handleCache) join(parts [][]byte, n int) string {
	var slot *atomic.Pointer[string]
	if hc != nil && n <= maxCachedHandle {
		slot = &hc.slots[handleSlot(parts, n)]
		if p := slot.Load(); p != nil && equalParts(*p, parts) {
			return *p
		}
	}
	var b strings.Builder
	b.Grow(n)
	for _, p := range parts {
		if len(p) == 0 {
			break
		}
		b.Write(p)
	}
	h := b.String()
	if slot != nil {
		slot.Store(&h)
	}
	return h
}

// handleSlot hashes the last bytes of the handle parts hold (FNV-1a over
// the last eight of the last part, and the length).
func handleSlot(parts [][]byte, n int) int {
	last := parts[0]
	for _, p := range parts[1:] {
		if len(p) == 0 {
			break
		}
		last = p
	}
	if len(last) > 8 {
		last = last[len(last)-8:]
	}
	h := uint32(2166136261) ^ uint32(n)
	for _, c := range last {
		h = (h ^ uint32(c)) * 16777619
	}
	return int(h % handleSlots)
}

// equalParts reports whether s is the concatenation of parts up to the
// first empty one.
func equalParts(s string, parts [][]byte) bool {
	for _, p := range parts {
		if len(p) == 0 {
			break
		}
		if len(s) < len(p) || s[:len(p)] != string(p) {
			return false
		}
		s = s[len(p):]
	}
	return s == ""
}

// chunkIndex reports which of the session's cookies name is: 0 for the
// base cookie, i for chunkName(i).
func (j cookieJar) chunkIndex(name []byte) (int, bool) {
	if len(name) < len(j.name) || string(name[:len(j.name)]) != j.name {
		return 0, false
	}
	rest := name[len(j.name):]
	if len(rest) == 0 {
		return 0, true
	}
	if rest[0] != '.' || len(rest) < 2 || rest[1] == '0' {
		return 0, false
	}
	i := 0
	for _, d := range rest[1:] {
		if d < '0' || d > '9' {
			return 0, false
		}
		if i = i*10 + int(d-'0'); i >= maxChunks {
			return 0, false
		}
	}
	return i, true
}

// hasSessionCookie reports whether the request carries any session cookie
// (base or chunk), so a dead one can be cleared.
func (j cookieJar) hasSessionCookie(c *fiber.Ctx) bool {
	for i := 0; i < maxChunks; i++ {
		if c.Cookies(j.chunkName(i)) != "" {
			return true
		}
	}
	return false
}

// splitHandle cuts a handle into chunks of at most chunkSize bytes.
func splitHandle(h string) []string {
	if h == "" {
		return nil
	}
	parts := make([]string, 0, (len(h)+chunkSize-1)/chunkSize)
	for len(h) > chunkSize {
		parts = append(parts, h[:chunkSize])
		h = h[chunkSize:]
	}
	return append(parts, h)
}

// writeHandle sets the session cookies for handle, and clears the higher
// chunks the request still carries from a longer handle.
func (j cookieJar) writeHandle(c *fiber.Ctx, handle string, expires time.Time) error {
	parts := splitHandle(handle)
	if len(parts) > maxChunks {
		return newError(fiber.StatusInternalServerError, "session_too_large",
			"the session does not fit in the gateway's cookies; use a server-side session store (bbolt or redis)")
	}
	for i, p := range parts {
		j.set(c, j.chunkName(i), p, expires)
	}
	for i := len(parts); i < maxChunks; i++ {
		if c.Cookies(j.chunkName(i)) != "" {
			j.clear(c, j.chunkName(i))
		}
	}
	return nil
}

// clearSession expires every session cookie the request carries (and the
// base cookie always, so a response can end a session it just read).
func (j cookieJar) clearSession(c *fiber.Ctx) {
	j.clear(c, j.name)
	for i := 1; i < maxChunks; i++ {
		if c.Cookies(j.chunkName(i)) != "" {
			j.clear(c, j.chunkName(i))
		}
	}
}
