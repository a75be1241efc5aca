package obs

import (
	"bytes"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"
)

// recorder is a writer that keeps each Write apart.
type recorder struct {
	mu     sync.Mutex
	writes []string
	fail   error
	wrote  chan struct{}
}

func newRecorder() *recorder { return &recorder{wrote: make(chan struct{}, 1000)} }

func (r *recorder) Write(p []byte) (int, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.fail != nil {
		return 0, r.fail
	}
	r.writes = append(r.writes, string(p))
	r.wrote <- struct{}{}
	return len(p), nil
}

func (r *recorder) all() (n int, text string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.writes), strings.Join(r.writes, "")
}

func TestLogBufferBatchesWholeLines(t *testing.T) {
	t.Parallel()
	rec := newRecorder()
	b := NewLogBuffer(rec, time.Hour, 100) // no timer flush during the test
	defer b.Close()
	var want strings.Builder
	for i := range 30 {
		line := fmt.Sprintf("line %02d\n", i) // 8 bytes
		want.WriteString(line)
		if _, err := b.Write([]byte(line)); err != nil {
			t.Fatal(err)
		}
	}
	if err := b.Flush(); err != nil {
		t.Fatal(err)
	}
	n, text := rec.all()
	if text != want.String() {
		t.Fatalf("written %q, want %q", text, want.String())
	}
	// 240 bytes in a 100-byte buffer of whole 8-byte lines: 12 lines (96
	// bytes) a write, the last 6 on Flush.
	if n != 3 {
		t.Errorf("%d writes, want 3", n)
	}
	for _, w := range rec.writes {
		if !strings.HasSuffix(w, "\n") {
			t.Errorf("write %q splits a line", w)
		}
	}
}

func TestLogBufferLargeLineWrittenAlone(t *testing.T) {
	t.Parallel()
	rec := newRecorder()
	b := NewLogBuffer(rec, time.Hour, 16)
	defer b.Close()
	b.Write([]byte("short\n"))
	long := strings.Repeat("x", 40) + "\n"
	b.Write([]byte(long))
	n, text := rec.all()
	if n != 2 || text != "short\n"+long {
		t.Fatalf("%d writes %q: want the buffered line, then the long one", n, text)
	}
}

func TestLogBufferFlushesOnTimer(t *testing.T) {
	t.Parallel()
	rec := newRecorder()
	b := NewLogBuffer(rec, time.Millisecond, 1<<20)
	defer b.Close()
	b.Write([]byte("waiting\n"))
	select {
	case <-rec.wrote:
	case <-time.After(10 * time.Second):
		t.Fatal("the timer never wrote the buffered line")
	}
	if _, text := rec.all(); text != "waiting\n" {
		t.Fatalf("written %q", text)
	}
}

func TestLogBufferCloseWritesTheRest(t *testing.T) {
	t.Parallel()
	rec := newRecorder()
	b := NewLogBuffer(rec, time.Hour, 1<<20)
	b.Write([]byte("last words\n"))
	if n, _ := rec.all(); n != 0 {
		t.Fatal("written before Close")
	}
	if err := b.Close(); err != nil {
		t.Fatal(err)
	}
	if _, text := rec.all(); text != "last words\n" {
		t.Fatalf("after Close: %q", text)
	}
	if err := b.Close(); err != nil { // twice is fine
		t.Fatal(err)
	}
}

func TestLogBufferReportsWriteErrorsAndDoesNotGrow(t *testing.T) {
	t.Parallel()
	rec := newRecorder()
	rec.fail = errors.New("disk full")
	b := NewLogBuffer(rec, time.Hour, 64)
	defer b.Close()
	for range 100 {
		b.Write([]byte("0123456789\n"))
	}
	if len(b.buf) > 64 {
		t.Fatalf("buffer grew to %d bytes behind a failing writer", len(b.buf))
	}
	if err := b.Flush(); err == nil || !strings.Contains(err.Error(), "disk full") {
		t.Fatalf("Flush = %v, want the write error", err)
	}
}

// A record at Warn or above is written at once, after everything logged
// before it, so the lines around a failure are never left in the buffer.
func TestLogHandlerWritesWarningsAtOnce(t *testing.T) {
	t.Parallel()
	rec := newRecorder()
	b := NewLogBuffer(rec, time.Hour, 1<<20)
	defer b.Close()
	log := slog.New(NewLogHandler(slog.NewJSONHandler(b, nil), b)).With("component", "gateway")
	log.Info("request", "status", 200)
	if n, _ := rec.all(); n != 0 {
		t.Fatal("an Info line was written at once")
	}
	log.WithGroup("g").Warn("refresh failed")
	n, text := rec.all()
	if n != 1 {
		t.Fatalf("%d writes after a warning, want 1", n)
	}
	lines := strings.Split(strings.TrimSpace(text), "\n")
	if len(lines) != 2 || !strings.Contains(lines[0], `"msg":"request"`) || !strings.Contains(lines[1], `"msg":"refresh failed"`) {
		t.Fatalf("written %q: want the info line, then the warning", text)
	}
	if !strings.Contains(lines[1], `"component":"gateway"`) {
		t.Errorf("attributes lost through the wrapper: %s", lines[1])
	}
}

// Many goroutines logging at once lose no line and split none.
func TestLogBufferConcurrent(t *testing.T) {
	t.Parallel()
	var out bytes.Buffer
	var mu sync.Mutex
	w := writerFunc(func(p []byte) (int, error) { mu.Lock(); defer mu.Unlock(); return out.Write(p) })
	b := NewLogBuffer(w, time.Millisecond, 256)
	log := slog.New(NewLogHandler(slog.NewJSONHandler(b, nil), b))
	var wg sync.WaitGroup
	for g := range 8 {
		wg.Go(func() {
			for i := range 200 {
				log.Info("request", "g", g, "i", i)
			}
		})
	}
	wg.Wait()
	if err := b.Close(); err != nil {
		t.Fatal(err)
	}
	mu.Lock()
	defer mu.Unlock()
	lines := strings.Split(strings.TrimSpace(out.String()), "\n")
	if len(lines) != 1600 {
		t.Fatalf("%d lines, want 1600", len(lines))
	}
	for _, l := range lines {
		topLevel(t, l, "msg") // each a whole JSON object
	}
}

type writerFunc func([]byte) (int, error)

func (f writerFunc) Write(p []byte) (int, error) { return f(p) }
