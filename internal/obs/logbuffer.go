package obs

import (
	"context"
	"io"
	"log/slog"
	"sync"
	"time"
)

// LogBuffer batches log lines into few write system calls. An access log
// writes one line per request; unbuffered, that is one write(2) per
// request, a measurable share of the gateway's CPU at tens of thousands of
// requests per second. LogBuffer keeps whole lines (slog's handlers hand
// each record to Write in one call) and writes them out when FlushSize
// bytes have gathered, every FlushInterval, on Flush, and on Close.
//
// Written by hand because what it needs is small and specific: bufio.Writer
// splits a line across two writes when the buffer fills, has no timer and
// is not safe for concurrent use; the log libraries that batch (zap's
// BufferedWriteSyncer) would bring a second logging stack beside slog.
//
// Caveats: a process killed with SIGKILL loses at most the lines of the
// last FlushInterval. Lines at Warn and above are written at once when the
// logger is built with NewLogHandler, so the lines an operator reads after
// a failure are not among them.
type LogBuffer struct {
	w        io.Writer
	size     int
	mu       sync.Mutex
	buf      []byte
	err      error // the last write error, reported by Flush and Close
	stop     chan struct{}
	stopOnce sync.Once
	done     chan struct{}
}

// Defaults of NewLogBuffer.
const (
	// DefaultFlushInterval bounds how long a line waits in the buffer.
	DefaultFlushInterval = 20 * time.Millisecond
	// DefaultFlushSize is how many bytes are gathered before a write.
	DefaultFlushSize = 32 << 10
)

// NewLogBuffer returns a LogBuffer writing to w, flushed every interval
// (<= 0: DefaultFlushInterval) and whenever size bytes (<= 0:
// DefaultFlushSize) have gathered. Close it to write what is left and
// stop its timer.
func NewLogBuffer(w io.Writer, interval time.Duration, size int) *LogBuffer {
	if interval <= 0 {
		interval = DefaultFlushInterval
	}
	if size <= 0 {
		size = DefaultFlushSize
	}
	b := &LogBuffer{w: w, size: size, buf: make([]byte, 0, size), stop: make(chan struct{}), done: make(chan struct{})}
	go b.run(interval)
	return b
}

func (b *LogBuffer) run(interval time.Duration) {
	defer close(b.done)
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		select {
		case <-t.C:
			_ = b.Flush()
		case <-b.stop:
			return
		}
	}
}

// Write appends p, a whole line, to the buffer. It writes the buffer out
// first when p would not fit, and writes p directly when it is larger than
// the buffer itself. It never keeps p.
func (b *LogBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if len(b.buf)+len(p) > b.size {
		b.flushLocked()
		if len(p) > b.size {
			if _, err := b.w.Write(p); err != nil {
				b.err = err
			}
			return len(p), nil
		}
	}
	b.buf = append(b.buf, p...)
	return len(p), nil
}

// Flush writes out what is buffered and returns the first write error
// since the last Flush, if any.
func (b *LogBuffer) Flush() error {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.flushLocked()
	err := b.err
	b.err = nil
	return err
}

func (b *LogBuffer) flushLocked() {
	if len(b.buf) == 0 {
		return
	}
	// A log line lost to a failing writer (a closed pipe, a full disk) is
	// not retried: the buffer must not grow without bound behind it.
	if _, err := b.w.Write(b.buf); err != nil {
		b.err = err
	}
	b.buf = b.buf[:0]
}

// Close stops the timer and writes out what is left. Writes after Close
// are still accepted and written at the next Flush or when the buffer
// fills; call Flush again if a logger may still be used.
func (b *LogBuffer) Close() error {
	b.stopOnce.Do(func() { close(b.stop) })
	<-b.done
	return b.Flush()
}

// NewLogHandler wraps h, a handler writing to buf, so that every record at
// Warn or above is written out at once: an error is never left in the
// buffer, and everything logged before it goes out with it, in order.
func NewLogHandler(h slog.Handler, buf *LogBuffer) slog.Handler {
	return newFlushHandler(h, buf)
}

type flushHandler struct {
	h   slog.Handler
	buf *LogBuffer
	// ah is h when it writes access lines itself (NewJSONHandler): the
	// wrapper passes them through and keeps flushing at Warn and above.
	ah accessHandler
}

var _ accessHandler = (*flushHandler)(nil)

func newFlushHandler(h slog.Handler, buf *LogBuffer) *flushHandler {
	ah, _ := h.(accessHandler)
	return &flushHandler{h: h, buf: buf, ah: ah}
}

func (f *flushHandler) Enabled(ctx context.Context, l slog.Level) bool { return f.h.Enabled(ctx, l) }

func (f *flushHandler) Handle(ctx context.Context, r slog.Record) error {
	err := f.h.Handle(ctx, r)
	if r.Level >= slog.LevelWarn {
		if ferr := f.buf.Flush(); err == nil {
			err = ferr
		}
	}
	return err
}

func (f *flushHandler) handleAccess(a accessRecord) bool {
	if f.ah == nil || !f.ah.handleAccess(a) {
		return false
	}
	if a.level >= slog.LevelWarn {
		_ = f.buf.Flush()
	}
	return true
}

func (f *flushHandler) WithAttrs(as []slog.Attr) slog.Handler {
	return newFlushHandler(f.h.WithAttrs(as), f.buf)
}

func (f *flushHandler) WithGroup(name string) slog.Handler {
	return newFlushHandler(f.h.WithGroup(name), f.buf)
}
