package obs

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math"
	"math/rand/v2"
	"strings"
	"sync"
	"testing"
	"time"
	"unicode/utf8"
)

// refTime is the records' fixed time: a nanosecond part with trailing
// zeros, in a zone with minutes.
var refTime = time.Date(2026, 12, 7, 21, 54, 57, 123456700, time.FixedZone("", 5*3600+30*60))

// tricky are strings at every escaping rule of slog's JSON handler.
var tricky = []string{
	"", "plain", `"quoted"`, `back\slash`, "new\nline", "cr\rtab\t", "nul\x00", "\x01\x1f\x7f",
	"<script>&amp;</script>", "é日本😀", "\u2028\u2029", "a\u2028b\u2029c", "\xff", "\xc3", "ab\xe2\x80",
	"\xed\xa0\x80", "\ufffd", "\xf4\x90\x80\x80", "eight ch", "seventeen chars!!", `0123456"89abcdef`,
	"0123456789abcde\\", "0123456\x1f89abcdef", "0123456789\u2028", strings.Repeat("x", 100) + "\n",
	strings.Repeat("日", 7) + "\x80",
}

// logValuer takes the slow path (it is resolved).
type logValuer struct{ s string }

func (l logValuer) LogValue() slog.Value { return slog.StringValue(l.s) }

// randString draws a string from bytes and runes that escaping treats
// differently, or one of tricky.
func randString(r *rand.Rand) string {
	if r.IntN(3) == 0 {
		return tricky[r.IntN(len(tricky))]
	}
	pieces := []string{"a", "Z", "/", " ", `"`, `\`, "\n", "\r", "\t", "\x00", "\x1b", "\x7f", "<", ">", "&",
		"é", "€", "😀", "\u2028", "\u2029", "\xff", "\xe2\x80", "\xc0\xaf", "\ufffd", "0123456789"}
	var sb strings.Builder
	for n := r.IntN(24); n > 0; n-- {
		sb.WriteString(pieces[r.IntN(len(pieces))])
	}
	return sb.String()
}

// randAttr draws an attribute of a kind the fast path writes, or, when
// slow, of any kind.
func randAttr(r *rand.Rand, slow bool) slog.Attr {
	key := randString(r)
	n := 7
	if slow {
		n = 16
	}
	switch r.IntN(n) {
	case 0, 1:
		return slog.String(key, randString(r))
	case 2:
		return slog.Int64(key, []int64{0, -1, 42, math.MaxInt64, math.MinInt64, r.Int64() - r.Int64()}[r.IntN(6)])
	case 3:
		return slog.Uint64(key, []uint64{0, 7, math.MaxUint64, r.Uint64()}[r.IntN(4)])
	case 4:
		return slog.Bool(key, r.IntN(2) == 0)
	case 5:
		return slog.Duration(key, time.Duration(r.Int64()-r.Int64())>>uint(r.IntN(64)))
	case 6:
		return slog.Time(key, []time.Time{refTime, {}, time.Unix(0, 0).UTC(), refTime.Add(-time.Duration(r.Int64N(1e18))),
			time.Date(0, 1, 1, 0, 0, 0, 1, time.UTC), time.Date(9999, 12, 31, 23, 59, 59, 999999999, time.FixedZone("", -(8*3600+15*60)))}[r.IntN(6)])
	case 7:
		return slog.Float64(key, []float64{0, 1.5, -2e-7, 1e21, 123456789, math.NaN(), math.Inf(1)}[r.IntN(7)])
	case 8:
		return slog.Any(key, errors.New(randString(r)))
	case 9:
		return slog.Any(key, map[string]any{"k": randString(r), "n": 1})
	case 10:
		return slog.Group(key, randAttr(r, true), randAttr(r, false))
	case 11:
		return slog.Group(key) // empty: left out
	case 12:
		return slog.Any(key, logValuer{randString(r)})
	case 13:
		return slog.Attr{} // empty: left out
	case 14:
		return slog.Time(key, time.Date(10000, 1, 1, 0, 0, 0, 0, time.UTC)) // slog writes an error first
	default:
		return slog.Any(key, nil)
	}
}

// randLevel draws a built-in level or a custom one.
func randLevel(r *rand.Rand) slog.Level {
	return []slog.Level{slog.LevelDebug, slog.LevelInfo, slog.LevelWarn, slog.LevelError,
		slog.LevelInfo + 2, slog.LevelDebug - 3, slog.LevelError + 13, -9, 1, 5, 100}[r.IntN(11)]
}

// handlerPair is a slog handler and ours, built alike.
type handlerPair struct {
	want, got         slog.Handler
	wantBuf, gotBuf   *bytes.Buffer
	describe          []string
	fastOnly, noGroup bool
}

func newPair(opts *slog.HandlerOptions) *handlerPair {
	p := &handlerPair{wantBuf: new(bytes.Buffer), gotBuf: new(bytes.Buffer)}
	p.want = slog.NewJSONHandler(p.wantBuf, opts)
	p.got = NewJSONHandler(p.gotBuf, opts)
	return p
}

func (p *handlerPair) withAttrs(as ...slog.Attr) {
	p.want, p.got = p.want.WithAttrs(as), p.got.WithAttrs(as)
	p.describe = append(p.describe, fmt.Sprintf("WithAttrs%v", as))
}

func (p *handlerPair) withGroup(name string) {
	p.want, p.got = p.want.WithGroup(name), p.got.WithGroup(name)
	p.describe = append(p.describe, fmt.Sprintf("WithGroup(%q)", name))
}

// check handles rec with both and compares their bytes.
func (p *handlerPair) check(t *testing.T, rec slog.Record) {
	t.Helper()
	p.wantBuf.Reset()
	p.gotBuf.Reset()
	ctx := context.Background()
	werr := p.want.Handle(ctx, rec.Clone())
	gerr := p.got.Handle(ctx, rec.Clone())
	if (werr == nil) != (gerr == nil) {
		t.Fatalf("slog returned %v, ours %v", werr, gerr)
	}
	if !bytes.Equal(p.wantBuf.Bytes(), p.gotBuf.Bytes()) {
		t.Fatalf("after %v:\nslog wrote %q\nours wrote %q", p.describe, p.wantBuf.Bytes(), p.gotBuf.Bytes())
	}
}

// The handler writes what slog.NewJSONHandler writes, byte for byte, for
// records on the fast path and the slow one alike, under every option and
// through WithAttrs and WithGroup.
func TestJSONHandlerMatchesSlog(t *testing.T) {
	t.Parallel()
	lv := new(slog.LevelVar)
	lv.Set(slog.LevelDebug - 10)
	options := []struct {
		name string
		opts *slog.HandlerOptions
	}{
		{"nil", nil},
		{"level", &slog.HandlerOptions{Level: lv}},
		{"replace", &slog.HandlerOptions{Level: lv, ReplaceAttr: func(groups []string, a slog.Attr) slog.Attr {
			if a.Key == slog.TimeKey && len(groups) == 0 {
				return slog.Attr{}
			}
			if a.Value.Kind() == slog.KindString {
				a.Value = slog.StringValue(strings.ToUpper(a.Value.String()))
			}
			return a
		}}},
		{"source", &slog.HandlerOptions{AddSource: true}},
	}
	for _, o := range options {
		for _, slow := range []bool{false, true} {
			t.Run(fmt.Sprintf("%s/slow=%v", o.name, slow), func(t *testing.T) {
				t.Parallel()
				r := rand.New(rand.NewPCG(1, uint64(len(o.name))))
				for range 3000 {
					p := newPair(o.opts)
					for n := r.IntN(4); n > 0; n-- {
						switch {
						case slow && r.IntN(4) == 0:
							p.withGroup(randString(r))
						default:
							as := make([]slog.Attr, r.IntN(3))
							for i := range as {
								as[i] = randAttr(r, slow && r.IntN(4) == 0)
							}
							p.withAttrs(as...)
						}
					}
					tm := []time.Time{refTime, {}, refTime.Truncate(time.Second), refTime.UTC(), time.Date(1, 1, 1, 0, 0, 0, 0, time.UTC),
						time.Date(-1, 1, 1, 0, 0, 0, 0, time.UTC), time.Date(12345, 1, 1, 0, 0, 0, 0, time.UTC), time.Now()}[r.IntN(8)]
					rec := slog.NewRecord(tm, randLevel(r), randString(r), 0)
					for n := r.IntN(9); n > 0; n-- {
						rec.AddAttrs(randAttr(r, slow && r.IntN(3) == 0))
					}
					p.check(t, rec)
				}
			})
		}
	}
}

// Each case is one the random records may miss.
func TestJSONHandlerMatchesSlogCases(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name  string
		with  []slog.Attr
		group string
		attrs []slog.Attr
	}{
		{"no attrs", nil, "", nil},
		{"empty key and value", nil, "", []slog.Attr{slog.String("", ""), slog.Int("", 0)}},
		{"empty attr among others", []slog.Attr{{}}, "", []slog.Attr{slog.String("a", "b"), {}, slog.Int("c", 1)}},
		{"duplicate keys", []slog.Attr{slog.String("msg", "x")}, "", []slog.Attr{slog.String("time", "y"), slog.String("msg", "z")}},
		{"group without record attrs", nil, "g", nil},
		{"group with record attrs", []slog.Attr{slog.Int("a", 1)}, "g", []slog.Attr{slog.Int("b", 2)}},
		{"empty group name", nil, "", []slog.Attr{slog.Group("", slog.Int("inline", 1))}},
		{"float", nil, "", []slog.Attr{slog.Float64("f", 1e-7), slog.Float64("g", 3)}},
		{"error", nil, "", []slog.Attr{slog.Any("err", errors.New("boom \"x\"\n"))}},
		{"every tricky string", nil, "", func() (as []slog.Attr) {
			for _, s := range tricky {
				as = append(as, slog.String(s, s))
			}
			return as
		}()},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			for _, tm := range []time.Time{refTime, {}} {
				p := newPair(nil)
				if len(tc.with) > 0 {
					p.withAttrs(tc.with...)
				}
				if tc.group != "" {
					p.withGroup(tc.group)
				}
				rec := slog.NewRecord(tm, slog.LevelInfo, "m", 0)
				rec.AddAttrs(tc.attrs...)
				p.check(t, rec)
			}
		})
	}
}

// Times: the second cache must never serve a second or a zone that is not
// the time's own.
func TestJSONHandlerTimes(t *testing.T) {
	t.Parallel()
	p := newPair(nil)
	base := time.Date(2026, 3, 29, 0, 59, 59, 0, time.UTC)
	berlin, err := time.LoadLocation("Europe/Berlin")
	if err != nil {
		berlin = time.FixedZone("CET", 3600) // no zoneinfo on the machine
	}
	for i := range 200 {
		tm := base.Add(time.Duration(i) * 37 * time.Millisecond)
		for _, loc := range []*time.Location{time.UTC, berlin, time.FixedZone("", -3600), time.FixedZone("", 90), time.Local,
			time.FixedZone("", 3000*365*24*3600), time.FixedZone("", -(1 << 30))} {
			for _, ns := range []int{0, 1, 10, 100000000, 999999999, 120000} {
				v := time.Date(tm.Year(), tm.Month(), tm.Day(), tm.Hour(), tm.Minute(), tm.Second(), ns, time.UTC).In(loc)
				rec := slog.NewRecord(v, slog.LevelInfo, "t", 0)
				rec.AddAttrs(slog.Time("at", v.Add(time.Hour)))
				p.check(t, rec)
			}
		}
	}
}

// An access line written from its fields is the line its record gives,
// through NewLogHandler too, and the line a slog.JSONHandler writes.
func TestHandleAccessMatchesRecord(t *testing.T) {
	t.Parallel()
	as := []accessRecord{
		{time: refTime, level: slog.LevelInfo, requestID: []byte("0123456789abcdef01234567"), method: "GET", route: "/api/",
			path: "/api/items/42", status: 200, duration: 1234567 * time.Nanosecond},
		{time: refTime.UTC(), level: slog.LevelError, requestID: []byte("x"), method: "other", route: "unmatched",
			path: "/é/\"q\"/\x00/\xff/\u2028", status: 502, duration: -5, frontend: "shop"},
		{time: time.Now(), level: slog.LevelInfo + 1, requestID: nil, method: "", route: "", path: "", status: 0, duration: 0, frontend: "a\"b"},
	}
	for i, a := range as {
		for _, with := range [][]slog.Attr{nil, {slog.String("component", "gateway")}, {slog.String("component", "gateway"), slog.String("frontend", "x")}} {
			var want, got bytes.Buffer
			wh := slog.NewJSONHandler(&want, nil).WithAttrs(with)
			buf := NewLogBuffer(&got, time.Hour, 0)
			gh := NewLogHandler(NewJSONHandler(buf, nil), buf).WithAttrs(with)
			if err := wh.Handle(context.Background(), a.record()); err != nil {
				t.Fatal(err)
			}
			ah, ok := gh.(accessHandler)
			if !ok || !ah.handleAccess(a) {
				t.Fatalf("case %d: NewLogHandler(NewJSONHandler) does not write the access line itself", i)
			}
			if err := buf.Close(); err != nil {
				t.Fatal(err)
			}
			if want.String() != got.String() {
				t.Fatalf("case %d with %v:\nslog wrote %q\nours wrote %q", i, with, want.String(), got.String())
			}
		}
	}
}

// A handler in a group, or with ReplaceAttr, leaves the access line to
// Handle (handleAccess reports false and writes nothing); one whose level
// is above the line's drops it.
func TestHandleAccessSlowAndDisabled(t *testing.T) {
	t.Parallel()
	a := accessRecord{time: refTime, level: slog.LevelInfo, requestID: []byte("id"), method: "GET", route: "/", path: "/", status: 200}
	var out bytes.Buffer
	for name, h := range map[string]slog.Handler{
		"group":   NewJSONHandler(&out, nil).WithGroup("g"),
		"replace": NewJSONHandler(&out, &slog.HandlerOptions{ReplaceAttr: func(_ []string, a slog.Attr) slog.Attr { return a }}),
		"any":     NewJSONHandler(&out, nil).WithAttrs([]slog.Attr{slog.Any("err", errors.New("x"))}),
	} {
		if h.(accessHandler).handleAccess(a) {
			t.Errorf("%s: handleAccess wrote the line", name)
		}
	}
	if out.Len() != 0 {
		t.Fatalf("handleAccess wrote %q", out.String())
	}
	h := NewJSONHandler(&out, &slog.HandlerOptions{Level: slog.LevelWarn})
	if !h.(accessHandler).handleAccess(a) || out.Len() != 0 {
		t.Fatalf("a disabled line: handled or written %q", out.String())
	}
}

// lineWriter checks that every Write is one whole line.
type lineWriter struct {
	mu    sync.Mutex
	n     int
	err   error
	inUse bool
}

func (w *lineWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	if w.inUse {
		w.err = errors.New("two Writes at once")
	}
	w.inUse = true
	w.mu.Unlock()
	if len(p) == 0 || p[len(p)-1] != '\n' || bytes.IndexByte(p, '\n') != len(p)-1 || !utf8.Valid(p) {
		w.mu.Lock()
		w.err = fmt.Errorf("write of %q is not one line", p)
		w.mu.Unlock()
	}
	time.Sleep(time.Microsecond) // widen the window for a concurrent Write
	w.mu.Lock()
	w.inUse = false
	w.n++
	w.mu.Unlock()
	return len(p), nil
}

// Concurrent records on the fast and the slow path, from a handler and
// those derived from it, reach the writer one whole line per Write, one
// Write at a time, as slog's handler guarantees.
func TestJSONHandlerOneLinePerWrite(t *testing.T) {
	t.Parallel()
	w := new(lineWriter)
	root := NewJSONHandler(w, nil)
	hs := []slog.Handler{root, root.WithAttrs([]slog.Attr{slog.String("c", "g")}), root.WithGroup("g"),
		root.WithAttrs([]slog.Attr{slog.Any("e", errors.New("e"))})}
	a := accessRecord{time: refTime, level: slog.LevelInfo, requestID: []byte("id"), method: "GET", route: "/", path: "/", status: 200}
	var wg sync.WaitGroup
	const per = 50
	for g := range 8 {
		wg.Go(func() {
			for i := range per {
				h := hs[(g+i)%len(hs)]
				if i%3 == 0 {
					if h.(accessHandler).handleAccess(a) {
						continue
					}
				}
				rec := slog.NewRecord(time.Now(), slog.LevelInfo, "m\n", 0)
				rec.AddAttrs(slog.String("s", strings.Repeat("x", i*100)), slog.Float64("f", 1.5))
				_ = h.Handle(context.Background(), rec)
			}
		})
	}
	wg.Wait()
	if w.err != nil {
		t.Fatal(w.err)
	}
	if w.n != 8*per {
		t.Fatalf("%d lines written, want %d", w.n, 8*per)
	}
}

// FuzzJSONHandlerString compares the two handlers on a message, a key and
// a string value: the escaping rules are where they could part.
func FuzzJSONHandlerString(f *testing.F) {
	for _, s := range tricky {
		f.Add(s, s, s)
	}
	f.Fuzz(func(t *testing.T, msg, key, val string) {
		p := newPair(nil)
		p.withAttrs(slog.String(key, val))
		rec := slog.NewRecord(refTime, slog.LevelWarn, msg, 0)
		rec.AddAttrs(slog.String(val, key), slog.String(key, msg))
		p.check(t, rec)
	})
}

var _ io.Writer = (*lineWriter)(nil)
