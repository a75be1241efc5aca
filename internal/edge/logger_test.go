package edge

import (
	"bytes"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"strings"
	"testing"
)

// fasthttp's Logger lines carry its error texts, which quote the request;
// serverLogger writes kinds and redacts every string.
func TestServerLoggerRedacts(t *testing.T) {
	t.Parallel()
	var buf bytes.Buffer
	l := serverLogger{log: slog.New(slog.NewJSONHandler(&buf, &slog.HandlerOptions{Level: slog.LevelDebug}))}
	secret := "Authorization: Bearer forged-secret"
	addr := &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 4242}
	l.Printf("error when serving connection %q<->%q: %v", addr, addr, fmt.Errorf("error when reading request headers: %q", secret))
	l.Printf("odd %s %d", secret, 7)
	l.Printf("wrapped %v", errors.Join(errors.New(secret)))
	out := buf.String()
	if strings.Contains(out, "forged-secret") {
		t.Fatalf("the server log shows request bytes: %s", out)
	}
	for _, want := range []string{"127.0.0.1:4242", "<malformed_header>", "<redacted> 7"} {
		if !strings.Contains(out, want) {
			t.Errorf("the log lacks %q: %s", want, out)
		}
	}
}
