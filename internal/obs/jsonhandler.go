package obs

import (
	"context"
	"io"
	"log/slog"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"time"
	"unicode/utf8"
)

// NewJSONHandler returns a slog.Handler whose output is byte for byte what
// slog.NewJSONHandler(w, opts) writes, for every record, only cheaper for
// the common ones. Operators parse these lines: the keys, their order, the
// time format, the escaping, durations as integer nanoseconds and the level
// text are slog's, and the tests compare the two handlers' bytes.
//
// A record takes the fast path, encoded by hand into a pooled buffer, when
// the options have no ReplaceAttr and no AddSource, the handler has no
// group, and every attribute (the record's and those added With) is a
// String, Int64, Uint64, Bool, Duration or Time with a year in [0, 9999].
// Anything else (floats, errors and other Any values, LogValuers, groups,
// times slog reports an error for) goes to a slog.JSONHandler built with
// the same writer and options, which WithAttrs and WithGroup keep in step.
// As with slog, each record is one Write call, serialized with every other
// Write of the handler and the handlers derived from it; LogBuffer relies
// on whole lines per Write.
//
// Written by hand because slog's JSONHandler was most of the access line's
// cost (issue 20: 9,200 of the line's 11,200 instructions per request, in
// attribute resolution, per-value panic recovery and key escaping), and no
// well-kept library writes slog's exact JSON faster: zap, zerolog and
// phuslu/log each have their own time format, level text and escaping
// rules (zap's production encoder writes durations as seconds, for one),
// matching slog's bytes with any of them would be configuration to verify
// against every release, and each would bring a second logging stack
// beside slog for one line. What is copied here is small and cites its
// source: slog's escaping and time format.
//
// Caveat: the fast path copies the slog of Go 1.26. The tests compare the
// two handlers under the Go that runs them, so a release that changes
// slog's JSON fails them rather than letting the lines drift apart.
func NewJSONHandler(w io.Writer, opts *slog.HandlerOptions) slog.Handler {
	if opts == nil {
		opts = &slog.HandlerOptions{}
	}
	s := &jsonShared{w: w}
	return &jsonHandler{
		shared: s,
		level:  opts.Level,
		fast:   opts.ReplaceAttr == nil && !opts.AddSource,
		// The inner handler writes through s's lock, so that its lines
		// and the fast path's are serialized together, as slog serializes
		// the Writes of one handler and its derived handlers.
		inner: slog.NewJSONHandler(lockedWriter{s}, opts),
	}
}

// jsonShared is what a handler and the handlers derived from it share:
// the writer and its lock, the buffers and the time cache.
type jsonShared struct {
	mu   sync.Mutex
	w    io.Writer
	bufs sync.Pool // *[]byte
	// second holds the last whole second formatted, so that a line
	// formats its date, clock and zone once a second rather than once a
	// line (time.Time.AppendFormat was a tenth of the line's cost).
	second atomic.Pointer[timeSecond]
}

// timeSecond is one second's RFC 3339 text in one location, quoted and
// split around where the fraction goes: `"2006-01-02T15:04:05` and
// `Z"` or `-07:00"`.
type timeSecond struct {
	unix  int64
	loc   *time.Location
	head  [20]byte
	zone  [maxZone]byte
	nzone int
}

// maxZone bounds the cached zone text with its closing quote. The zone
// of a time whose year is in [0, 9999] has at most eight digits of hours
// ("+hhhhhhhh:mm" and '"', 13 bytes); a longer one is formatted by time,
// uncached, should it ever come.
const maxZone = 16

func (s *jsonShared) write(p []byte) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	_, err := s.w.Write(p)
	return err
}

// maxPooledBuf is the largest buffer kept for reuse, as slog's own
// buffer pool keeps: a rare huge line does not pin its memory.
const maxPooledBuf = 16 << 10

func (s *jsonShared) getBuf() *[]byte {
	if p, ok := s.bufs.Get().(*[]byte); ok {
		return p
	}
	b := make([]byte, 0, 1024)
	return &b
}

func (s *jsonShared) putBuf(p *[]byte) {
	if cap(*p) > maxPooledBuf {
		return
	}
	*p = (*p)[:0]
	s.bufs.Put(p)
}

type lockedWriter struct{ s *jsonShared }

func (l lockedWriter) Write(p []byte) (int, error) {
	if err := l.s.write(p); err != nil {
		return 0, err
	}
	return len(p), nil
}

type jsonHandler struct {
	shared *jsonShared
	level  slog.Leveler // nil: Info, as slog
	// fast tells whether records may take the fast path at all: no
	// ReplaceAttr, no AddSource, no group, and pre holds every attribute
	// added With.
	fast bool
	// pre holds the attributes added With, each as `,"key":value`.
	pre   []byte
	inner slog.Handler
}

var (
	_ slog.Handler  = (*jsonHandler)(nil)
	_ accessHandler = (*jsonHandler)(nil)
)

func (h *jsonHandler) Enabled(_ context.Context, l slog.Level) bool {
	minLevel := slog.LevelInfo
	if h.level != nil {
		minLevel = h.level.Level()
	}
	return l >= minLevel
}

func (h *jsonHandler) WithAttrs(as []slog.Attr) slog.Handler {
	h2 := *h
	h2.inner = h.inner.WithAttrs(as)
	if h.fast {
		pre := slices.Clip(h.pre)
		for _, a := range as {
			var ok bool
			if pre, ok = h.appendAttr(pre, a); !ok {
				h2.fast, pre = false, nil
				break
			}
		}
		h2.pre = pre
	}
	return &h2
}

func (h *jsonHandler) WithGroup(name string) slog.Handler {
	h2 := *h
	h2.inner = h.inner.WithGroup(name)
	h2.fast, h2.pre = false, nil
	return &h2
}

func (h *jsonHandler) Handle(ctx context.Context, r slog.Record) error {
	if !h.fast || !fastKinds(r) {
		return h.inner.Handle(ctx, r)
	}
	p := h.shared.getBuf()
	defer h.shared.putBuf(p)
	b, ok := h.appendHead((*p)[:0], r.Time, r.Level, r.Message)
	if ok {
		r.Attrs(func(a slog.Attr) bool {
			b, ok = h.appendAttr(b, a)
			return ok
		})
	}
	if !ok {
		return h.inner.Handle(ctx, r)
	}
	b = append(b, '}', '\n')
	*p = b
	return h.shared.write(b)
}

// handleAccess writes a's line as Handle writes a.record(), without the
// record: building it, copying its strings and walking its attributes was
// a fifth of the line's cost. It reports false, having written nothing,
// when the line needs the slow path (the caller then uses Handle).
// a.path borrows fasthttp's buffer; the line copies it before returning
// and nothing keeps it.
func (h *jsonHandler) handleAccess(a accessRecord) bool {
	if !h.fast {
		return false
	}
	if !h.Enabled(context.Background(), a.level) {
		return true
	}
	p := h.shared.getBuf()
	b, ok := h.appendHead((*p)[:0], a.time, a.level, accessMsg)
	if !ok {
		h.shared.putBuf(p)
		return false
	}
	// The keys and order of accessRecord.record.
	b = append(b, `,"request_id":`...)
	b = appendJSONString(b, a.requestID)
	b = append(b, `,"method":`...)
	b = appendJSONString(b, a.method)
	b = append(b, `,"route":`...)
	b = appendJSONString(b, a.route)
	b = append(b, `,"path":`...)
	b = appendJSONString(b, a.path)
	b = append(b, `,"status":`...)
	b = strconv.AppendInt(b, int64(a.status), 10)
	b = append(b, `,"duration":`...)
	b = strconv.AppendInt(b, int64(a.duration), 10)
	if a.frontend != "" {
		b = append(b, `,"frontend":`...)
		b = appendJSONString(b, a.frontend)
	}
	b = append(b, '}', '\n')
	*p = b
	_ = h.shared.write(b)
	h.shared.putBuf(p)
	return true
}

// appendHead appends the line up to its first record attribute: the
// built-in time (left out when zero), level and msg, then the attributes
// added With. It reports false for a time slog reports an error for.
// (log/slog/handler.go commonHandler.handle)
func (h *jsonHandler) appendHead(b []byte, t time.Time, l slog.Level, msg string) ([]byte, bool) {
	b = append(b, '{')
	if !t.IsZero() {
		var ok bool
		b = append(b, `"time":`...)
		if b, ok = h.shared.appendTime(b, t); !ok {
			return b, false
		}
		b = append(b, ',')
	}
	b = append(b, `"level":`...)
	switch l {
	case slog.LevelDebug:
		b = append(b, `"DEBUG"`...)
	case slog.LevelInfo:
		b = append(b, `"INFO"`...)
	case slog.LevelWarn:
		b = append(b, `"WARN"`...)
	case slog.LevelError:
		b = append(b, `"ERROR"`...)
	default:
		b = appendJSONString(b, l.String())
	}
	b = append(b, `,"msg":`...)
	b = appendJSONString(b, msg)
	return append(b, h.pre...), true
}

// fastKinds reports whether every attribute of r has a kind appendAttr
// writes: a record with an error or a float goes to the inner handler
// before any of it is encoded twice.
func fastKinds(r slog.Record) bool {
	ok := true
	r.Attrs(func(a slog.Attr) bool {
		ok = fastKind(a.Value.Kind())
		return ok
	})
	return ok
}

func fastKind(k slog.Kind) bool {
	switch k {
	case slog.KindString, slog.KindInt64, slog.KindUint64, slog.KindBool, slog.KindDuration, slog.KindTime:
		return true
	}
	// Float64 goes through encoding/json in slog (its own exponent rules
	// and an error text for NaN); Any, LogValuer and Group call user code
	// or nest.
	return false
}

// appendAttr appends `,"key":value` for the kinds the fast path writes
// exactly as slog does (log/slog/json_handler.go appendJSONValue), and
// reports false for every other. None of these kinds is ever an empty
// Attr, which slog would leave out.
func (h *jsonHandler) appendAttr(b []byte, a slog.Attr) ([]byte, bool) {
	v := a.Value
	k := v.Kind()
	if !fastKind(k) {
		return b, false
	}
	n := len(b)
	b = append(b, ',')
	b = appendJSONString(b, a.Key)
	b = append(b, ':')
	switch k {
	case slog.KindString:
		b = appendJSONString(b, v.String())
	case slog.KindInt64:
		b = strconv.AppendInt(b, v.Int64(), 10)
	case slog.KindUint64:
		b = strconv.AppendUint(b, v.Uint64(), 10)
	case slog.KindBool:
		b = strconv.AppendBool(b, v.Bool())
	case slog.KindDuration:
		b = strconv.AppendInt(b, int64(v.Duration()), 10)
	case slog.KindTime:
		var ok bool
		if b, ok = h.shared.appendTime(b, v.Time()); !ok {
			return b[:n], false
		}
	}
	return b, true
}

// appendTime appends t quoted as slog's appendJSONTime does, RFC 3339 with
// nanoseconds, trailing zeros trimmed, and reports false for a year
// outside [0, 9999], where slog writes an error first. The date, clock and
// zone of t's second come from the cache when it holds that second in t's
// location: the same instant in the same *time.Location always has the
// same text. The text is put together in an array and appended at once.
func (s *jsonShared) appendTime(b []byte, t time.Time) ([]byte, bool) {
	unix, loc := t.Unix(), t.Location()
	c := s.second.Load()
	if c == nil || c.unix != unix || c.loc != loc {
		if y := t.Year(); y < 0 || y >= 10000 {
			return b, false
		}
		var tmp [64]byte
		f := t.AppendFormat(append(tmp[:0], '"'), time.RFC3339) // no fraction: 20 bytes, then the zone
		f = append(f, '"')
		if len(f)-20 > maxZone {
			b = append(b, '"')
			b = t.AppendFormat(b, time.RFC3339Nano)
			return append(b, '"'), true
		}
		c = &timeSecond{unix: unix, loc: loc, nzone: len(f) - 20}
		copy(c.head[:], f)
		copy(c.zone[:], f[20:])
		s.second.Store(c)
	}
	var d [20 + 10 + maxZone]byte
	*(*[20]byte)(d[:20]) = c.head
	n := 20
	// The fraction as time's appendNano writes .999999999: nine digits,
	// trailing zeros trimmed, no dot when none is left.
	if ns := uint32(t.Nanosecond()); ns != 0 {
		d[20] = '.'
		d[29] = byte('0' + ns%10)
		ns /= 10
		for i := 27; i > 20; i -= 2 {
			q := ns % 100
			d[i], d[i+1] = byte('0'+q/10), byte('0'+q%10)
			ns /= 100
		}
		n = 30
		for d[n-1] == '0' {
			n--
		}
	}
	*(*[maxZone]byte)(d[n : n+maxZone]) = c.zone
	return append(b, d[:n+c.nzone]...), true
}

// appendJSONString appends s quoted and escaped exactly as slog's JSON
// handler escapes strings (log/slog/json_handler.go
// appendEscapedJSONString, encoding/json's rules without HTML escaping):
// `"` and `\` backslashed, \n \r \t by name, the other control bytes as
// \u00XX, each invalid UTF-8 byte as \ufffd, U+2028 and U+2029 as \u2028
// and \u2029; everything else, <, > and & included, as is.
func appendJSONString[S string | []byte](b []byte, s S) []byte {
	b = append(b, '"')
	i := safePrefix(s)
	if i == len(s) {
		b = append(b, s...)
		return append(b, '"')
	}
	start := 0
	for i < len(s) {
		c := s[i]
		if c < utf8.RuneSelf {
			if c >= 0x20 && c != '"' && c != '\\' {
				i++
				continue
			}
			b = append(b, s[start:i]...)
			switch c {
			case '"', '\\':
				b = append(b, '\\', c)
			case '\n':
				b = append(b, '\\', 'n')
			case '\r':
				b = append(b, '\\', 'r')
			case '\t':
				b = append(b, '\\', 't')
			default:
				b = append(b, '\\', 'u', '0', '0', hexDigits[c>>4], hexDigits[c&0xF])
			}
			i++
			start = i
			continue
		}
		r, size := utf8.DecodeRune([]byte(s[i:min(i+utf8.UTFMax, len(s))]))
		switch {
		case r == utf8.RuneError && size == 1:
			b = append(b, s[start:i]...)
			b = append(b, `\ufffd`...)
		case r == '\u2028' || r == '\u2029':
			b = append(b, s[start:i]...)
			b = append(b, '\\', 'u', '2', '0', '2', hexDigits[r&0xF])
		default:
			i += size
			continue
		}
		i += size
		start = i
	}
	b = append(b, s[start:]...)
	return append(b, '"')
}

// safePrefix returns the length of s's leading run of bytes JSON takes
// as they are: ASCII, not a control byte, '"' or '\\'. It tests eight
// bytes at a time, the last eight overlapping the ones before, and four
// at a time in strings shorter than eight (a loop over bytes cost 17
// instructions a byte). The byte loop then finds where the run ends in
// a string that has an unsafe byte.
func safePrefix[S string | []byte](s S) int {
	n := len(s)
	switch {
	case n >= 8:
		i := 0
		for ; i+8 <= n; i += 8 {
			if !safe8(s[i : i+8]) {
				return safeBytes(s, i)
			}
		}
		if i < n && !safe8(s[n-8:]) {
			return safeBytes(s, i)
		}
		return n
	case n >= 4:
		if safe4(s[:4]) && safe4(s[n-4:]) {
			return n
		}
	}
	return safeBytes(s, 0)
}

// safeBytes returns the end of s's run of safe bytes from i on.
func safeBytes[S string | []byte](s S, i int) int {
	for ; i < len(s); i++ {
		if c := s[i]; c < 0x20 || c >= utf8.RuneSelf || c == '"' || c == '\\' {
			break
		}
	}
	return i
}

// safe8 and safe4 report whether all of s's 8 (4) bytes are safe. With
// x the bytes as one word, (x - 0x01..01*n) &^ x & 0x80..80 is nonzero
// exactly when some byte of x is below n (n <= 0x80), and x ^ 0x01..01*c
// has a zero byte exactly where x has c.
func safe8[S string | []byte](s S) bool {
	const ones, highs = 0x0101010101010101, 0x8080808080808080
	_ = s[7]
	x := uint64(s[0]) | uint64(s[1])<<8 | uint64(s[2])<<16 | uint64(s[3])<<24 |
		uint64(s[4])<<32 | uint64(s[5])<<40 | uint64(s[6])<<48 | uint64(s[7])<<56
	q, bs := x^(ones*'"'), x^(ones*'\\')
	return (x|(x-ones*0x20)&^x|(q-ones)&^q|(bs-ones)&^bs)&highs == 0
}

func safe4[S string | []byte](s S) bool {
	const ones, highs = 0x01010101, 0x80808080
	_ = s[3]
	x := uint32(s[0]) | uint32(s[1])<<8 | uint32(s[2])<<16 | uint32(s[3])<<24
	q, bs := x^(ones*'"'), x^(ones*'\\')
	return (x|(x-ones*0x20)&^x|(q-ones)&^q|(bs-ones)&^bs)&highs == 0
}

const hexDigits = "0123456789abcdef"
