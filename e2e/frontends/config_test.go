package frontends

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/bffgate/bffgate/e2e/stack"
)

// TestConfigCheck runs `bffgate config check` and a start on files with
// the mistakes the issue lists: each is refused, and the message names
// every frontend involved by its YAML path and name. A good file of four
// frontends passes.
func TestConfigCheck(t *testing.T) {
	bin := stack.Binary(t)
	const port = 8443
	// Files only: nothing runs, so the URLs need not answer.
	e := &env{
		t: t, issuer: "http://127.0.0.1:9090", oidc: "http://127.0.0.1:9191", api: "http://127.0.0.1:9292",
		spaRoot: t.TempDir(), store: "bbolt", hashes: map[string]string{},
	}
	e.hashUsers()
	fs := fourFrontends(port)
	for _, f := range fs {
		e.writeSPA(f)
	}
	x := func(name, host, prefix string) frontend {
		return frontend{Name: name, Host: host, Prefix: prefix, Embedded: true, port: port}
	}

	cases := []struct {
		name   string
		fronts []frontend
		want   []string // every one must be in the message
	}{
		{
			name:   "overlapping matches",
			fronts: []frontend{x("shop", "shop.localhost", "/app"), x("admin", "shop.localhost", "/app")},
			want:   []string{"gateway.frontends[0]", "shop", "gateway.frontends[1]", "admin"},
		},
		{
			name: "shared cookie name",
			fronts: func() []frontend {
				s, ad := x("shop", "shop.localhost", ""), x("admin", "admin.localhost", "")
				s.CookieName, ad.CookieName = "__Host-bff-shared", "__Host-bff-shared"
				return []frontend{s, ad}
			}(),
			want: []string{"gateway.frontends[0]", "shop", "gateway.frontends[1]", "admin", "__Host-bff-shared"},
		},
		{
			name: "frontend without provider",
			fronts: func() []frontend {
				ad := x("admin", "admin.localhost", "")
				ad.NoProvider = true
				return []frontend{x("shop", "shop.localhost", ""), ad}
			}(),
			want: []string{"gateway.frontends[1]", "admin", "provider.issuer_url"},
		},
		{
			name: "a prefix hiding another frontend's endpoints",
			fronts: func() []frontend {
				shop := x("shop", "shop.localhost", "")
				shop.BasePath = "/admin/bff"
				return []frontend{shop, x("admin", "shop.localhost", "/admin")}
			}(),
			want: []string{"gateway.frontends[0]", "shop", "gateway.frontends[1]", "admin"},
		},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			for _, f := range tc.fronts {
				e.writeSPA(f)
			}
			file := filepath.Join(t.TempDir(), "bffgate.yaml")
			if err := os.WriteFile(file, []byte(e.yaml(tc.fronts)), 0o600); err != nil {
				t.Fatal(err)
			}
			out, err := run(t, bin, "config", "check", "--config", file)
			if err == nil {
				t.Fatalf("config check passed the file:\n%s\n%s", out, e.yaml(tc.fronts))
			}
			wantAll(t, "config check", out, tc.want)
			out, err = run(t, bin, "--config", file)
			if err == nil {
				t.Fatalf("bffgate started with the file:\n%s", out)
			}
			wantAll(t, "the start", out, tc.want)
		})
	}

	t.Run("four frontends", func(t *testing.T) {
		file := filepath.Join(t.TempDir(), "bffgate.yaml")
		if err := os.WriteFile(file, []byte(e.yaml(fs)), 0o600); err != nil {
			t.Fatal(err)
		}
		if out, err := run(t, bin, "config", "check", "--config", file); err != nil {
			t.Fatalf("config check refused the four frontends: %v\n%s\n%s", err, out, e.yaml(fs))
		}
	})
}

// run runs bffgate with args and a data directory of its own, and returns
// its output; a start that does not refuse its file within 30 s is
// stopped (and reported as started).
func run(t *testing.T, bin string, args ...string) (string, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin, args...)
	cmd.Env = []string{
		"PATH=" + os.Getenv("PATH"),
		"HOME=" + os.Getenv("HOME"),
		"BFFGATE_DATA_DIR=" + t.TempDir(),
		fmt.Sprintf("BFFGATE_GATEWAY_LISTEN=127.0.0.1:%d", stack.FreePort(t)),
		fmt.Sprintf("BFFGATE_ISSUER_LISTEN=127.0.0.1:%d", stack.FreePort(t)),
		"BFFGATE_LOG_FORMAT=text",
	}
	out, err := cmd.CombinedOutput()
	if ctx.Err() != nil {
		return string(out), nil // it ran: the file was accepted
	}
	return string(out), err
}

// wantAll wants every one of want in out.
func wantAll(t *testing.T, what, out string, want []string) {
	t.Helper()
	var missing []string
	for _, w := range want {
		if !strings.Contains(out, w) {
			missing = append(missing, w)
		}
	}
	if len(missing) > 0 {
		t.Errorf("%s: the message does not name %q:\n%s", what, missing, out)
	}
}
