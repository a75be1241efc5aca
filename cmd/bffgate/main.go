// Command bffgate runs the bffgate Backend-for-Frontend gateway, its
// embedded OpenID Connect issuer and the demo API.
//
// With no arguments it runs the whole local stack on embedded defaults.
// See README.md for the configuration and the subcommands:
//
//	bffgate [serve] [--config bffgate.yaml] [--data-dir DIR] [--listen ADDR] [--log-level L]
//	bffgate config check --config bffgate.yaml
//	bffgate keys rotate --alg RS256 [--config bffgate.yaml]
//	bffgate users hash < password.txt
//	bffgate version
package main

import (
	"bufio"
	"context"
	"encoding/base64"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"strings"
	"syscall"

	"github.com/mattn/go-isatty"
)

// version is set at build time with -ldflags "-X main.version=...".
var version = "dev"

func main() {
	os.Exit(run(os.Args[1:], os.Stdin, os.Stdout, os.Stderr, os.Environ()))
}

// run is main without the process: it returns the exit code.
func run(args []string, stdin io.Reader, stdout, stderr io.Writer, env []string) int {
	cmd := "serve"
	if len(args) > 0 && !strings.HasPrefix(args[0], "-") {
		cmd, args = args[0], args[1:]
		if len(args) > 0 && !strings.HasPrefix(args[0], "-") && (cmd == "config" || cmd == "keys" || cmd == "users") {
			cmd, args = cmd+" "+args[0], args[1:]
		}
	}
	var err error
	switch cmd {
	case "serve":
		err = cmdServe(args, stdout, stderr, env)
	case "config check":
		err = cmdConfigCheck(args, stdout, env)
	case "keys rotate":
		err = cmdKeysRotate(args, stdout, stderr, env)
	case "users hash":
		err = cmdUsersHash(stdin, stdout)
	case "version":
		fmt.Fprintln(stdout, "bffgate", version)
	case "help", "-h", "--help":
		fmt.Fprint(stdout, usage)
	default:
		err = fmt.Errorf("unknown command %q\n\n%s", cmd, usage)
	}
	if errors.Is(err, flag.ErrHelp) {
		return 0
	}
	if err != nil {
		fmt.Fprintln(stderr, "bffgate:", err)
		return 1
	}
	return 0
}

const usage = `usage:
  bffgate [serve] [flags]          run the stack (no --config: the zero-config local stack)
  bffgate config check --config F  validate a configuration file without starting
  bffgate keys rotate --alg ALG    make a new active issuer key (older keys keep verifying)
  bffgate users hash               read a password on stdin, print its argon2id hash
  bffgate version
flags:
  --config F     configuration file (YAML; also BFFGATE_CONFIG)
  --data-dir D   data directory (data_dir)
  --listen A     the gateway's listen address (gateway.listen)
  --log-level L  debug, info, warn or error (log.level)
Every configuration key can be set by an environment variable: gateway.listen is BFFGATE_GATEWAY_LISTEN.
`

// commonFlags are the flags every configuration-reading command takes.
type commonFlags struct {
	config, dataDir, listen, logLevel string
}

func parseFlags(name string, args []string, extra func(*flag.FlagSet)) (*commonFlags, error) {
	var f commonFlags
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.StringVar(&f.config, "config", "", "configuration file")
	fs.StringVar(&f.dataDir, "data-dir", "", "data directory")
	fs.StringVar(&f.listen, "listen", "", "the gateway's listen address")
	fs.StringVar(&f.logLevel, "log-level", "", "debug, info, warn or error")
	if extra != nil {
		extra(fs)
	}
	if err := fs.Parse(args); err != nil {
		return nil, err
	}
	if fs.NArg() > 0 {
		return nil, fmt.Errorf("%s: unexpected argument %q", name, fs.Arg(0))
	}
	return &f, nil
}

// configFor loads the configuration the flags and the environment name.
// Flags win over the environment, which wins over the file.
func configFor(f *commonFlags, env []string) (*Config, error) {
	path := f.config
	if path == "" {
		path = lookupEnv(env, "BFFGATE_CONFIG")
	}
	var extra []string
	if f.dataDir != "" {
		extra = append(extra, "BFFGATE_DATA_DIR="+f.dataDir)
	}
	if f.listen != "" {
		extra = append(extra, "BFFGATE_GATEWAY_LISTEN="+f.listen)
	}
	if f.logLevel != "" {
		extra = append(extra, "BFFGATE_LOG_LEVEL="+f.logLevel)
	}
	return loadConfig(path, append(env[:len(env):len(env)], extra...))
}

func lookupEnv(env []string, name string) string {
	v := ""
	for _, kv := range env {
		if k, val, ok := strings.Cut(kv, "="); ok && k == name {
			v = val
		}
	}
	return v
}

func cmdConfigCheck(args []string, stdout io.Writer, env []string) error {
	f, err := parseFlags("config check", args, nil)
	if err != nil {
		return err
	}
	cfg, err := configFor(f, env)
	if err != nil {
		return err
	}
	if err := checkConfig(cfg); err != nil {
		return err
	}
	src := f.config
	if src == "" {
		src = "the zero-config defaults"
	}
	fmt.Fprintf(stdout, "configuration is valid (%s)\n", src)
	return nil
}

func cmdUsersHash(stdin io.Reader, stdout io.Writer) error {
	line, err := bufio.NewReader(stdin).ReadString('\n')
	if err != nil && !errors.Is(err, io.EOF) {
		return fmt.Errorf("users hash: reading the password from stdin: %w", err)
	}
	pw := strings.TrimRight(line, "\r\n")
	if pw == "" {
		return errors.New("users hash: no password on stdin; run: printf '%s' 'the password' | bffgate users hash")
	}
	h, err := hashPassword(pw)
	if err != nil {
		return err
	}
	fmt.Fprintln(stdout, h)
	return nil
}

// newLogger builds the process logger: text on a terminal, JSON otherwise.
func newLogger(cfg LogConfig, w io.Writer) *slog.Logger {
	var level slog.Level
	_ = level.UnmarshalText([]byte(cfg.Level)) // validated already
	opts := &slog.HandlerOptions{Level: level}
	format := cfg.Format
	if format == "auto" {
		format = "json"
		if f, ok := w.(*os.File); ok && isatty.IsTerminal(f.Fd()) {
			format = "text"
		}
	}
	// Each piece serve builds gets this logger With its component
	// (issuer, gateway, session, demoapi); what they hand on adds a
	// subsystem, never a second component.
	if format == "text" {
		return slog.New(slog.NewTextHandler(w, opts))
	}
	return slog.New(slog.NewJSONHandler(w, opts))
}

// signalContext is cancelled on SIGINT or SIGTERM.
func signalContext() (context.Context, context.CancelFunc) {
	return signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
}

// decodeKey reads a base64 key (standard or URL alphabet, padded or not).
func decodeKey(s string) ([]byte, error) {
	s = strings.TrimSpace(s)
	for _, enc := range []*base64.Encoding{base64.StdEncoding, base64.RawStdEncoding, base64.URLEncoding, base64.RawURLEncoding} {
		if b, err := enc.DecodeString(s); err == nil {
			return b, nil
		}
	}
	return nil, errors.New("not valid base64")
}
