package main

import (
	"errors"

	"golang.org/x/sync/errgroup"

	"github.com/bffgate/bffgate/internal/adminsock"
	"github.com/bffgate/bffgate/issuer"
)

// serveAdmin starts the admin socket in the data directory, for `bffgate
// agents disable|enable` while this process holds the data file. A data
// directory whose path is too long for a Unix socket runs without it (the
// commands then say to stop bffgate first); anything else in the way is
// an error at start.
func serveAdmin(g *errgroup.Group, rt *runtime, srv *issuer.Server, listeners *[]listener) error {
	log := rt.log.With("component", "admin")
	a, err := adminsock.Listen(rt.cfg.DataDir, srv, log)
	if errors.Is(err, adminsock.ErrPathTooLong) {
		log.Warn("no admin socket: `bffgate agents disable|enable` will need bffgate stopped on the data file; use a data_dir with a shorter path", "err", err)
		return nil
	}
	if err != nil {
		return err
	}
	*listeners = append(*listeners, listener{name: "admin socket", admin: a})
	g.Go(a.Serve)
	log.Info("admin socket listening", "path", a.Path())
	return nil
}
