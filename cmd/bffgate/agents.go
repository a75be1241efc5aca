package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"path/filepath"
	"slices"
	"strings"
	"time"

	berrors "go.etcd.io/bbolt/errors"

	"github.com/bffgate/bffgate/internal/adminsock"
	"github.com/bffgate/bffgate/issuer"
	"github.com/bffgate/bffgate/issuer/audit"
	"github.com/bffgate/bffgate/issuer/storage"
)

// leadingArgs splits the positional arguments in front of the flags.
func leadingArgs(args []string) (pos, flags []string) {
	i := 0
	for i < len(args) && !strings.HasPrefix(args[i], "-") {
		i++
	}
	return args[:i], args[i:]
}

// cmdAgentsSet disables or enables a client in the issuer's store (the
// data file, or Redis shared by every instance): through the admin socket
// of the bffgate running on the data directory, or, with none running,
// in the store itself.
func cmdAgentsSet(name string, disable bool, args []string, stdout, stderr io.Writer, env []string) error {
	pos, rest := leadingArgs(args)
	if len(pos) != 1 {
		return &usageError{fmt.Sprintf("bffgate %s takes one client id, then the flags", name)}
	}
	id := pos[0]
	f, err := parseFlags(name, rest, nil)
	if err != nil {
		return err
	}
	cfg, err := configFor(f, env)
	if err != nil {
		return err
	}
	known := slices.ContainsFunc(cfg.Issuer.Clients, func(c issuer.Client) bool { return c.ID == id }) ||
		(cfg.registersGatewayClient() && id == embeddedClientID) ||
		slices.ContainsFunc(cfg.frontendClients(), func(c issuer.Client) bool { return c.ID == id })
	if !known {
		return fmt.Errorf("no client %q in issuer.clients of the configuration", id)
	}
	ctx, stop := signalContext()
	defer stop()
	// A bffgate running on this data directory holds its data file: it
	// makes the change itself, through its admin socket.
	st, err := adminsock.SetClientState(ctx, cfg.DataDir, id, disable)
	var refused *adminsock.RefusedError
	switch {
	case err == nil:
		defer fmt.Fprintf(stdout, "The change was made by the bffgate running on data directory %s.\n", cfg.DataDir)
	case errors.As(err, &refused) && refused.NotFound():
		return fmt.Errorf("the bffgate running on data directory %s has no client %q: its configuration differs from this one (%s)", cfg.DataDir, id, refused.Message)
	case !errors.Is(err, adminsock.ErrNotRunning):
		return fmt.Errorf("%w (data directory %s)", err, cfg.DataDir)
	default:
		if st, err = setClientStateInStore(ctx, cfg, id, disable, stderr); errors.Is(err, berrors.ErrTimeout) {
			// Not err: it repeats the path twice and suggests what is wrong here.
			return fmt.Errorf("a running bffgate holds the data file of data directory %s but has no admin socket there "+
				"(an older version, or a data_dir path too long for a Unix socket, as its start log says): "+
				"stop it and run the command again, or restart it with a shorter data_dir and run the command while it runs", cfg.DataDir)
		} else if err != nil {
			return err
		}
	}
	if disable {
		fmt.Fprintf(stdout, "client %q disabled at %s: its grants are refused, and every token it holds is refused at introspection and userinfo by every instance on this store within about a second.\n", id, st.NotBefore.Format(time.RFC3339))
		return nil
	}
	fmt.Fprintf(stdout, "client %q enabled: it gets tokens again; the tokens it held before its disable (%s) stay revoked.\n", id, st.NotBefore.Format(time.RFC3339))
	return nil
}

// setClientStateInStore makes the change in the store itself, when no
// bffgate runs on the data directory (or, on Redis, this command runs
// with a data directory of its own).
func setClientStateInStore(ctx context.Context, cfg *Config, id string, disable bool, stderr io.Writer) (storage.ClientState, error) {
	rt, err := openState(ctx, cfg, newLogger(cfg.Log, stderr))
	if err != nil {
		return storage.ClientState{}, err
	}
	defer rt.close()
	st, err := issuer.SetClientDisabled(ctx, rt.istore, id, disable, time.Now())
	if err != nil {
		return storage.ClientState{}, err
	}
	if err := auditAgentChange(ctx, rt, cfg, id, disable, st); err != nil {
		return storage.ClientState{}, err
	}
	return st, nil
}

// auditAgentChange records a disable or enable in the audit file when
// no instance can: on the data file, this command holds it, so no
// bffgate runs on this data directory, and the instance started next
// reads the state as it is (it records the changes it sees happen, not
// the state it starts with). On Redis the running instances record it
// when they learn it, each in its own file: the command leaves the files
// alone.
func auditAgentChange(ctx context.Context, rt *runtime, cfg *Config, id string, disable bool, st storage.ClientState) error {
	if cfg.Issuer.Audit.File == "" || cfg.Issuer.Store == "redis" {
		return nil
	}
	key, err := issuer.AuditKey(ctx, rt.istore)
	if err != nil {
		return fmt.Errorf("reading the audit key from the store: %w", err)
	}
	var werr error
	f, err := audit.Open(audit.FileConfig{Path: cfg.Issuer.Audit.File, Key: key, MaxSize: cfg.Issuer.Audit.MaxSize, OnError: func(err error) { werr = err }})
	if err != nil {
		return fmt.Errorf("issuer.audit.file: %w", err)
	}
	action, verb := "agent_enable", "enabled"
	if disable {
		action, verb = "agent_disable", "disabled"
	}
	f.Log(ctx, audit.Record{Time: st.Changed, Action: action, ClientID: id, Decision: audit.Allow,
		Reason: "client " + verb + " with bffgate agents " + strings.TrimSuffix(verb, "d") + " (command line)"})
	if err := f.Close(); err != nil && werr == nil {
		werr = err
	}
	if werr != nil {
		return fmt.Errorf("the client is %s, but its audit record was not written: %w", verb, werr)
	}
	return nil
}

// cmdAuditVerify checks the HMAC chain of audit files, named in order
// (oldest first), or issuer.audit.file with its rotated files.
func cmdAuditVerify(args []string, stdout, stderr io.Writer, env []string) error {
	files, rest := leadingArgs(args)
	f, err := parseFlags("audit verify", rest, nil)
	if err != nil {
		return err
	}
	cfg, err := configFor(f, env)
	if err != nil {
		return err
	}
	if len(files) == 0 {
		if cfg.Issuer.Audit.File == "" {
			return &usageError{"name the audit files, or set issuer.audit.file"}
		}
		rotated, _ := filepath.Glob(cfg.Issuer.Audit.File + ".*")
		files = append(rotated, cfg.Issuer.Audit.File) // rotated names sort by time
	}
	ctx, stop := signalContext()
	defer stop()
	rt, err := openState(ctx, cfg, newLogger(cfg.Log, stderr))
	if err != nil {
		return err
	}
	defer rt.close()
	key, err := issuer.AuditKey(ctx, rt.istore)
	if err != nil {
		return fmt.Errorf("reading the audit key from the store: %w", err)
	}
	n, err := audit.Verify(key, files...)
	var be *audit.BrokenError
	if errors.As(err, &be) {
		return fmt.Errorf("the audit chain is broken after %d good records, at %v", n, be)
	}
	if err != nil {
		return err
	}
	fmt.Fprintf(stdout, "%d records verified in %d files: the chain is intact.\n", n, len(files))
	return nil
}
