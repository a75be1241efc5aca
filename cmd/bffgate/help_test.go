package main

import (
	"flag"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

var update = flag.Bool("update", false, "rewrite testdata/*.golden")

// golden compares got with testdata/name.golden (go test -update rewrites it).
func golden(t *testing.T, name, got string) {
	t.Helper()
	path := filepath.Join("testdata", name+".golden")
	if *update {
		if err := os.MkdirAll("testdata", 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(path, []byte(got), 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("%v (run go test -run %s -update to create it)", err, t.Name())
	}
	if got != string(want) {
		t.Errorf("%s differs from %s:\n--- got\n%s\n--- want\n%s", t.Name(), path, got, want)
	}
}

// Every help request prints its usage on stdout and exits 0: the whole
// CLI for bffgate --help, a group's commands for bffgate config --help
// (which used to be `unknown command "config"`), a command's flags for
// its own --help.
func TestHelp(t *testing.T) {
	t.Parallel()
	tests := []struct {
		golden string
		args   []string
	}{
		{"help", []string{"--help"}},
		{"help", []string{"-h"}},
		{"help", []string{"help"}},
		{"help-config", []string{"config"}},
		{"help-config", []string{"config", "--help"}},
		{"help-keys", []string{"keys", "--help"}},
		{"help-users", []string{"users", "--help"}},
		{"help-config-check", []string{"config", "check", "--help"}},
		{"help-serve", []string{"serve", "--help"}},
		{"help-keys-rotate", []string{"keys", "rotate", "--help"}},
		{"help-users-hash", []string{"users", "hash", "--help"}},
	}
	for _, tt := range tests {
		t.Run(strings.Join(tt.args, " "), func(t *testing.T) {
			t.Parallel()
			code, out, errOut := runCmd(t, "", tt.args...)
			if code != 0 || errOut != "" {
				t.Fatalf("exit %d, stderr %q; want 0 and nothing on stderr", code, errOut)
			}
			golden(t, tt.golden, out)
		})
	}
}

// The full usage names every command and every flag, so the golden file
// above cannot silently lose one.
func TestHelpNamesEverything(t *testing.T) {
	t.Parallel()
	u := usage()
	for _, c := range commands {
		if !strings.Contains(u, "bffgate "+c.name) {
			t.Errorf("usage does not name %q", c.name)
		}
	}
	var f commonFlags
	fs := flag.NewFlagSet("", flag.ContinueOnError)
	f.register(fs)
	fs.VisitAll(func(fl *flag.Flag) {
		if !strings.Contains(u, "--"+fl.Name+" ") {
			t.Errorf("usage does not name --%s", fl.Name)
		}
	})
}

// A command line bffgate cannot run exits 2 with a message on stderr that
// says what to do.
func TestUsageErrors(t *testing.T) {
	t.Parallel()
	tests := []struct {
		args []string
		want []string
	}{
		{[]string{"nonsense"}, []string{`unknown command "nonsense"`, "bffgate --help"}},
		{[]string{"config", "chek"}, []string{`unknown command "config" "chek"`, "bffgate config check"}},
		{[]string{"serve", "--bogus"}, []string{"-bogus", "usage: bffgate serve"}},
		{[]string{"config", "check", "extra"}, []string{`unexpected argument "extra"`}},
		{[]string{"version", "extra"}, []string{`unexpected argument "extra"`}},
	}
	for _, tt := range tests {
		t.Run(strings.Join(tt.args, " "), func(t *testing.T) {
			t.Parallel()
			code, _, errOut := runCmd(t, "", tt.args...)
			if code != 2 {
				t.Errorf("exit %d, want 2", code)
			}
			for _, w := range tt.want {
				if !strings.Contains(errOut, w) {
					t.Errorf("stderr %q does not contain %q", errOut, w)
				}
			}
		})
	}
}

// --issuer-listen and --demo-api-listen move those listeners as --listen
// moves the gateway, and what follows from them (the issuer URL, the demo
// route) moves too.
func TestListenFlags(t *testing.T) {
	t.Parallel()
	f := &commonFlags{listen: "127.0.0.1:18080", issuerListen: "127.0.0.1:19090", demoAPIListen: "127.0.0.1:19091"}
	cfg, err := configFor(f, []string{"BFFGATE_ISSUER_LISTEN=127.0.0.1:1"})
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Issuer.Listen != "127.0.0.1:19090" || cfg.Issuer.URL != "http://127.0.0.1:19090" {
		t.Errorf("issuer listen %q url %q, want the flag's", cfg.Issuer.Listen, cfg.Issuer.URL)
	}
	if cfg.DemoAPI.Listen != "127.0.0.1:19091" || len(cfg.Gateway.Routes) != 1 || cfg.Gateway.Routes[0].Upstream != "http://127.0.0.1:19091" {
		t.Errorf("demo API listen %q, routes %+v", cfg.DemoAPI.Listen, cfg.Gateway.Routes)
	}
	if cfg.Gateway.Listen != "127.0.0.1:18080" {
		t.Errorf("gateway listen %q", cfg.Gateway.Listen)
	}
}

// A listen address in use stops the start with a message that names the
// key, the flag and the variable that move it.
func TestPortInUseNamesFlag(t *testing.T) {
	t.Parallel()
	busy, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer busy.Close()
	code, _, errOut := runCmd(t, "", "--data-dir", t.TempDir(), "--issuer-listen", busy.Addr().String(),
		"--listen", "127.0.0.1:0", "--demo-api-listen", "127.0.0.1:0")
	if code != 1 {
		t.Fatalf("exit %d, want 1: %s", code, errOut)
	}
	for _, w := range []string{busy.Addr().String(), "issuer.listen", "--issuer-listen", "BFFGATE_ISSUER_LISTEN"} {
		if !strings.Contains(errOut, w) {
			t.Errorf("stderr %q does not contain %q", errOut, w)
		}
	}
}

// A configuration file with the embedded issuer and no user makes a stack
// nobody can log in to: start-up says so. The zero-config run has the
// demo user and says nothing.
func TestWarnsWhenIssuerHasNoUser(t *testing.T) {
	t.Parallel()
	zero, err := loadConfig("", nil)
	if err != nil {
		t.Fatal(err)
	}
	if w := startupWarnings(zero); len(w) != 0 {
		t.Errorf("zero-config warnings %q, want none", w)
	}
	cfg, err := loadConfig(writeFile(t, "gateway:\n  spa:\n    dev_url: http://localhost:5173\n"), nil)
	if err != nil {
		t.Fatal(err)
	}
	w := startupWarnings(cfg)
	if len(w) != 1 || !strings.Contains(w[0], "no user") || !strings.Contains(w[0], "issuer.users") {
		t.Errorf("warnings %q, want one naming issuer.users", w)
	}
}
