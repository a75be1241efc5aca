package main

import (
	"fmt"
	"io"
	"slices"

	"github.com/bffgate/bffgate/issuer"
)

// cmdConsentsRevoke forgets the consent a user gave a third-party client
// (a client ID metadata document URL, a registered client id, or a
// configured third_party client): its next authorization request shows
// the consent page again. Tokens already issued are not revoked (the
// user, or the client, revokes those at /revoke, which also forgets the
// consent).
func cmdConsentsRevoke(args []string, stdout, stderr io.Writer, env []string) error {
	pos, rest := leadingArgs(args)
	if len(pos) != 2 {
		return &usageError{"bffgate consents revoke takes a username (or subject) and a client id, then the flags"}
	}
	who, clientID := pos[0], pos[1]
	f, err := parseFlags("consents revoke", rest, nil)
	if err != nil {
		return err
	}
	cfg, err := configFor(f, env)
	if err != nil {
		return err
	}
	subject := who
	if i := slices.IndexFunc(cfg.Issuer.Users, func(u issuer.User) bool { return u.Username == who }); i >= 0 && cfg.Issuer.Users[i].Subject != "" {
		subject = cfg.Issuer.Users[i].Subject
	}
	ctx, stop := signalContext()
	defer stop()
	rt, err := openState(ctx, cfg, newLogger(cfg.Log, stderr))
	if err != nil {
		return err
	}
	defer rt.close()
	if err := rt.istore.RevokeConsent(ctx, subject, clientID); err != nil {
		return err
	}
	fmt.Fprintf(stdout, "the consent of %q to client %q is forgotten: its next authorization request asks again.\n", subject, clientID)
	return nil
}
