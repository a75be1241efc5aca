package main

import (
	"bytes"
	"encoding/json"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
)

// lockedBuffer is the log output of a process whose goroutines write at
// once.
type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) lines() []string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return strings.Split(strings.TrimSpace(l.b.String()), "\n")
}

// components returns the values of every top-level "component" member of
// a JSON log line, duplicates included (a map would keep only the last).
func components(t *testing.T, line string) []any {
	t.Helper()
	dec := json.NewDecoder(strings.NewReader(line))
	if tok, err := dec.Token(); err != nil || tok != json.Delim('{') {
		t.Fatalf("log line %q is not a JSON object (%v)", line, err)
	}
	var vals []any
	for dec.More() {
		k, err := dec.Token()
		if err != nil {
			t.Fatalf("log line %q: %v", line, err)
		}
		var v any
		if err := dec.Decode(&v); err != nil {
			t.Fatalf("log line %q: %v", line, err)
		}
		if k == "component" {
			vals = append(vals, v)
		}
	}
	return vals
}

// The embedded issuer as serve builds it (its logger With the component,
// obs adding it for the access log) writes JSON lines that carry the
// component once: the access line of a request, and every line before it.
func TestLogLinesCarryComponentOnce(t *testing.T) {
	t.Parallel()
	cfg, err := loadConfig("", []string{"BFFGATE_DATA_DIR=" + t.TempDir(), "BFFGATE_LOG_FORMAT=json", "BFFGATE_LOG_LEVEL=debug"})
	if err != nil {
		t.Fatal(err)
	}
	var out lockedBuffer
	rt, err := openState(t.Context(), cfg, newLogger(cfg.Log, &out))
	if err != nil {
		t.Fatal(err)
	}
	defer rt.close()
	srv, _, err := buildIssuer(t.Context(), rt)
	if err != nil {
		t.Fatal(err)
	}
	resp, err := srv.App().Test(httptest.NewRequest("GET", "/healthz", nil))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()

	access := 0
	for _, line := range out.lines() {
		got := components(t, line)
		if len(got) > 1 {
			t.Errorf("log line carries component %d times (%v), want at most once: %s", len(got), got, line)
		}
		if strings.Contains(line, `"msg":"request"`) {
			access++
			if len(got) != 1 || got[0] != "issuer" {
				t.Errorf("access line has component %v, want it once, \"issuer\": %s", got, line)
			}
		}
	}
	if access != 1 {
		t.Fatalf("one request made %d access lines, want 1; log:\n%s", access, strings.Join(out.lines(), "\n"))
	}
}
