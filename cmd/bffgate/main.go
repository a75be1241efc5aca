// Command bffgate runs the bffgate Backend-for-Frontend gateway, its
// embedded OpenID Connect issuer and the demo API.
//
// With no arguments it runs the whole local stack on embedded defaults.
// See README.md for the configuration and the subcommands:
//
//	bffgate [serve] [--config bffgate.yaml] [--data-dir DIR] [--listen ADDR]
//	        [--issuer-listen ADDR] [--demo-api-listen ADDR] [--log-level L]
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

	"github.com/bffgate/bffgate/internal/obs"
	"github.com/mattn/go-isatty"
)

// version is set at build time with -ldflags "-X main.version=...".
var version = "dev"

func main() {
	os.Exit(run(os.Args[1:], os.Stdin, os.Stdout, os.Stderr, os.Environ()))
}

// run is main without the process: it returns the exit code (0 done, 1
// failed, 2 a usage error).
func run(args []string, stdin io.Reader, stdout, stderr io.Writer, env []string) int {
	cmd, rest, err := findCommand(args)
	if err != nil {
		fmt.Fprintln(stderr, "bffgate:", err)
		return 2
	}
	if cmd == nil {
		// "bffgate help", "bffgate --help", or a group's help.
		fmt.Fprint(stdout, rest[0])
		return 0
	}
	err = cmd.run(rest, stdin, stdout, stderr, env)
	var ue *usageError
	switch {
	case errors.Is(err, flag.ErrHelp):
		fmt.Fprint(stdout, cmd.help())
		return 0
	case errors.As(err, &ue):
		fmt.Fprintf(stderr, "bffgate %s: %s\n\n%s", cmd.name, ue.msg, cmd.help())
		return 2
	case err != nil:
		fmt.Fprintln(stderr, "bffgate:", err)
		return 1
	}
	return 0
}

// command is one sub-command. The table below is the CLI: the dispatch,
// the usage text and each command's --help are made from it, so they
// cannot disagree.
type command struct {
	name     string // "config check"
	args     string // what follows the name in the synopsis
	summary  string
	flags    bool                   // takes the configuration flags
	extra    func(fs *flag.FlagSet) // its own flags, for --help
	run      func(args []string, stdin io.Reader, stdout, stderr io.Writer, env []string) error
	fullHelp string // more lines for its --help
}

var commands = []*command{
	{name: "serve", args: "[flags]", flags: true,
		summary: "run the stack (the default command; no --config: the zero-config local stack)",
		run: func(args []string, _ io.Reader, stdout, stderr io.Writer, env []string) error {
			return cmdServe(args, stdout, stderr, env)
		}},
	{name: "config check", args: "[flags]", flags: true,
		summary: "validate the configuration as start-up does, without starting",
		run: func(args []string, _ io.Reader, stdout, _ io.Writer, env []string) error {
			return cmdConfigCheck(args, stdout, env)
		}},
	{name: "keys rotate", args: "[--alg ALG] [flags]", flags: true, extra: rotateFlags(new(string)),
		summary: "make a new active issuer key (older keys keep verifying)",
		run: func(args []string, _ io.Reader, stdout, stderr io.Writer, env []string) error {
			return cmdKeysRotate(args, stdout, stderr, env)
		}},
	{name: "agents disable", args: "ID [flags]", flags: true,
		summary:  "refuse the grants and every live token of client ID (an agent or workload) on every instance",
		fullHelp: "With bffgate running on the same data directory, the running process makes the change through\nits admin socket (data_dir/admin.sock; run the command as bffgate's user); with none running, it\nwrites the issuer's store itself (the data file, or Redis shared by several instances).\n",
		run: func(args []string, _ io.Reader, stdout, stderr io.Writer, env []string) error {
			return cmdAgentsSet("agents disable", true, args, stdout, stderr, env)
		}},
	{name: "agents enable", args: "ID [flags]", flags: true,
		summary: "let a disabled client get tokens again (the tokens it held before stay revoked)",
		run: func(args []string, _ io.Reader, stdout, stderr io.Writer, env []string) error {
			return cmdAgentsSet("agents enable", false, args, stdout, stderr, env)
		}},
	{name: "consents revoke", args: "USER CLIENT [flags]", flags: true,
		summary:  "forget the consent USER (username or subject) gave the third-party client CLIENT",
		fullHelp: "Its next authorization request shows the consent page again. It writes the issuer's store;\non the data file, run it while bffgate is stopped (it holds the file).\n",
		run: func(args []string, _ io.Reader, stdout, stderr io.Writer, env []string) error {
			return cmdConsentsRevoke(args, stdout, stderr, env)
		}},
	{name: "audit verify", args: "[FILE...] [flags]", flags: true,
		summary:  "check the HMAC chain of audit files (oldest first; default: issuer.audit.file and its rotated files)",
		fullHelp: "It names the first record that was edited, removed, inserted or reordered.\n",
		run: func(args []string, _ io.Reader, stdout, stderr io.Writer, env []string) error {
			return cmdAuditVerify(args, stdout, stderr, env)
		}},
	{name: "users hash", args: "< password.txt",
		summary:  "read a password on stdin, print its argon2id hash for issuer.users[].password_hash",
		fullHelp: "example:\n  printf %s 'a password' | bffgate users hash\n",
		run: func(args []string, stdin io.Reader, stdout, _ io.Writer, _ []string) error {
			if err := noArgs(args); err != nil {
				return err
			}
			return cmdUsersHash(stdin, stdout)
		}},
	{name: "version", summary: "print the version",
		run: func(args []string, _ io.Reader, stdout, _ io.Writer, _ []string) error {
			if err := noArgs(args); err != nil {
				return err
			}
			fmt.Fprintln(stdout, "bffgate", version)
			return nil
		}},
}

// noArgs refuses arguments to a command that takes none, --help aside.
func noArgs(args []string) error {
	if len(args) == 0 {
		return nil
	}
	if args[0] == "-h" || args[0] == "-help" || args[0] == "--help" {
		return flag.ErrHelp
	}
	return &usageError{fmt.Sprintf("unexpected argument %q", args[0])}
}

// usageError is a command line the command cannot run: run prints it with
// the command's help and exits 2.
type usageError struct{ msg string }

func (e *usageError) Error() string { return e.msg }

// findCommand picks the command args name: no command means serve; a
// group name (config, keys, users) alone or with --help returns its help
// text in rest[0] and a nil command, as "help" and "--help" return the
// whole usage.
func findCommand(args []string) (*command, []string, error) {
	if len(args) == 0 || (strings.HasPrefix(args[0], "-") && !isHelp(args[0])) {
		return commands[0], args, nil
	}
	if isHelp(args[0]) || args[0] == "help" {
		return nil, []string{usage()}, nil
	}
	for _, c := range commands {
		if c.name == args[0] {
			return c, args[1:], nil
		}
	}
	var group []*command
	for _, c := range commands {
		if g, sub, ok := strings.Cut(c.name, " "); ok && g == args[0] {
			if len(args) > 1 && args[1] == sub {
				return c, args[2:], nil
			}
			group = append(group, c)
		}
	}
	switch {
	case len(group) == 0:
		return nil, nil, fmt.Errorf("unknown command %q; run bffgate --help for the commands", args[0])
	case len(args) == 1 || isHelp(args[1]):
		return nil, []string{groupHelp(args[0], group)}, nil
	default:
		return nil, nil, fmt.Errorf("unknown command %q %q\n\n%s", args[0], args[1], groupHelp(args[0], group))
	}
}

func isHelp(s string) bool { return s == "-h" || s == "-help" || s == "--help" }

// usage is the whole CLI: every command and the configuration flags.
func usage() string {
	var b strings.Builder
	b.WriteString("bffgate: a Backend-for-Frontend session gateway with an embedded OpenID Connect issuer.\n\nusage:\n")
	for _, c := range commands {
		fmt.Fprintf(&b, "  %-42s %s\n", strings.TrimSpace("bffgate "+c.name+" "+c.args), c.summary)
	}
	b.WriteString("\nflags of serve, config check and keys rotate:\n")
	b.WriteString(flagHelp(nil))
	b.WriteString("\n" + configHelp)
	return b.String()
}

// configHelp says where the rest of the configuration comes from.
const configHelp = `Every configuration key can also be set by an environment variable: BFFGATE_ plus
the key's path in upper case with underscores (gateway.listen is BFFGATE_GATEWAY_LISTEN).
Flags win over the environment, which wins over the file. A file turns off the demo user
and the demo API; bffgate.example.yaml documents every key with its default.
`

func groupHelp(group string, cmds []*command) string {
	var b strings.Builder
	fmt.Fprintf(&b, "usage: bffgate %s <command> [flags]\n\ncommands:\n", group)
	for _, c := range cmds {
		fmt.Fprintf(&b, "  %-42s %s\n", strings.TrimSpace("bffgate "+c.name+" "+c.args), c.summary)
	}
	fmt.Fprintf(&b, "\nrun bffgate %s --help for a command's flags.\n", cmds[0].name)
	return b.String()
}

// help is a command's --help text.
func (c *command) help() string {
	var b strings.Builder
	fmt.Fprintf(&b, "usage: %s\n\n%s.\n", strings.TrimSpace("bffgate "+c.name+" "+c.args), upperFirst(c.summary))
	if c.flags {
		b.WriteString("\nflags:\n")
		b.WriteString(flagHelp(c.extra))
		b.WriteString("\n" + configHelp)
	}
	if c.fullHelp != "" {
		b.WriteString("\n" + c.fullHelp)
	}
	return b.String()
}

func upperFirst(s string) string {
	if s == "" {
		return s
	}
	return strings.ToUpper(s[:1]) + s[1:]
}

// flagHelp lists the configuration flags (and extra's), each with the key
// and the variable it sets.
func flagHelp(extra func(*flag.FlagSet)) string {
	fs := flag.NewFlagSet("", flag.ContinueOnError)
	var f commonFlags
	f.register(fs)
	if extra != nil {
		extra(fs)
	}
	var b strings.Builder
	// In the order a reader looks for them, not flag's alphabetical one.
	for _, name := range []string{"config", "data-dir", "listen", "issuer-listen", "demo-api-listen", "log-level", "alg"} {
		if fl := fs.Lookup(name); fl != nil {
			fmt.Fprintf(&b, "  %-24s %s\n", "--"+fl.Name+" "+flagMeta[fl.Name], fl.Usage)
		}
	}
	return b.String()
}

// flagMeta names each flag's value in the help.
var flagMeta = map[string]string{
	"config": "FILE", "data-dir": "DIR", "listen": "ADDR", "issuer-listen": "ADDR",
	"demo-api-listen": "ADDR", "log-level": "LEVEL", "alg": "ALG",
}

// commonFlags are the flags every configuration-reading command takes.
// Each sets one configuration key, as its variable would.
type commonFlags struct {
	config, dataDir, listen, issuerListen, demoAPIListen, logLevel string
}

// flagKeys maps the flags that set a key to that key's variable; configFor
// applies them after the environment.
func (f *commonFlags) flagKeys() [][2]string {
	return [][2]string{
		{"BFFGATE_DATA_DIR", f.dataDir},
		{"BFFGATE_GATEWAY_LISTEN", f.listen},
		{"BFFGATE_ISSUER_LISTEN", f.issuerListen},
		{"BFFGATE_DEMO_API_LISTEN", f.demoAPIListen},
		{"BFFGATE_LOG_LEVEL", f.logLevel},
	}
}

func (f *commonFlags) register(fs *flag.FlagSet) {
	fs.StringVar(&f.config, "config", "", "the configuration file, YAML (BFFGATE_CONFIG)")
	fs.StringVar(&f.dataDir, "data-dir", "", "the data directory (data_dir, BFFGATE_DATA_DIR)")
	fs.StringVar(&f.listen, "listen", "", "the gateway's host:port (gateway.listen, BFFGATE_GATEWAY_LISTEN)")
	fs.StringVar(&f.issuerListen, "issuer-listen", "", "the embedded issuer's host:port (issuer.listen, BFFGATE_ISSUER_LISTEN)")
	fs.StringVar(&f.demoAPIListen, "demo-api-listen", "", "the demo API's host:port (demo_api.listen, BFFGATE_DEMO_API_LISTEN)")
	fs.StringVar(&f.logLevel, "log-level", "", "debug, info, warn or error (log.level, BFFGATE_LOG_LEVEL)")
}

// parseFlags parses a configuration-reading command's flags. A bad flag
// or an argument is a usageError; --help is flag.ErrHelp.
func parseFlags(name string, args []string, extra func(*flag.FlagSet)) (*commonFlags, error) {
	var f commonFlags
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.SetOutput(io.Discard) // run prints the command's help itself
	f.register(fs)
	if extra != nil {
		extra(fs)
	}
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return nil, err
		}
		return nil, &usageError{err.Error()}
	}
	if fs.NArg() > 0 {
		return nil, &usageError{fmt.Sprintf("unexpected argument %q", fs.Arg(0))}
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
	env = env[:len(env):len(env)]
	for _, kv := range f.flagKeys() {
		if kv[1] != "" {
			env = append(env, kv[0]+"="+kv[1])
		}
	}
	return loadConfig(path, env)
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
	if _, err := configFor(f, env); err != nil {
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
	return slog.New(newHandler(cfg, w, w))
}

// newBufferedLogger is newLogger for a long-running server: lines gather
// in an obs.LogBuffer (a few write calls a second instead of one per
// request) and a line at Warn or above is written at once. Close the
// buffer last, after the final line.
func newBufferedLogger(cfg LogConfig, w io.Writer) (*slog.Logger, *obs.LogBuffer) {
	buf := obs.NewLogBuffer(w, 0, 0)
	return slog.New(obs.NewLogHandler(newHandler(cfg, w, buf), buf)), buf
}

// newHandler builds the handler writing to out; the format "auto" looks
// at tty, the writer the lines end on, for a terminal.
func newHandler(cfg LogConfig, tty, out io.Writer) slog.Handler {
	var level slog.Level
	_ = level.UnmarshalText([]byte(cfg.Level)) // validated already
	opts := &slog.HandlerOptions{Level: level}
	format := cfg.Format
	if format == "auto" {
		format = "json"
		if f, ok := tty.(*os.File); ok && isatty.IsTerminal(f.Fd()) {
			format = "text"
		}
	}
	// Each piece serve builds gets this logger With its component
	// (issuer, gateway, session, demoapi); what they hand on adds a
	// subsystem, never a second component.
	if format == "text" {
		return slog.NewTextHandler(out, opts)
	}
	// slog's JSON lines, written faster (issue 20): the access line is
	// written from its fields, without a slog.Record.
	return obs.NewJSONHandler(out, opts)
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
