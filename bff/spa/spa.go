// Package spa serves the single-page application next to the gateway's BFF
// and API routes, so that the SPA, /bff/* and /api/* share one origin (no
// CORS, and the session cookie is first-party). Three sources:
//
//   - Config.FS: an embedded SPA (the demo, static.FS()).
//   - Config.Dir: a built SPA on disk (Vite's or webpack's dist/).
//   - Config.DevURL: a dev server (Vite's http://localhost:5173), proxied
//     with WebSocket upgrades, so hot module reload works through the
//     gateway. Idle connections to it are closed after
//     Config.DevIdleTimeout (4 s), before Node's http server closes them
//     (5 s); a GET that still finds its reused connection closed is sent
//     again on a new one (internal/upstream), and a 502 names the cause.
//
// Mount the handler last, after the BFF and API routes: it answers every
// path they do not.
//
// # Files
//
// A path naming a file serves it with its content type (from a built-in
// table of web types, not the host's mime database, so every machine
// answers alike) and X-Content-Type-Options: nosniff. A path without a file
// extension, asked for by a client that accepts HTML (a navigation), gets
// index.html: the history-API fallback that lets /items/42 load the SPA
// whose router then shows item 42. A missing path with an extension
// (/assets/app-1a2b3c4d.js after a redeploy) is a plain 404, never
// index.html: a script tag fed HTML fails confusingly.
//
// Caching: names carrying a content hash (app.3f9a1c2b.js,
// assets/index-AbC123de.js) get `public, max-age=31536000, immutable`:
// their content never changes under that name. Everything else, index.html
// first, gets `no-cache` with a strong ETag, so a deploy is seen at once
// while unchanged files cost a 304.
//
// # Security
//
// Paths are cleaned and checked with fs.ValidPath before any open, so no
// ".." or encoded variant leaves the root; dot files and dot directories
// (.env, .git) are never served; directories are never listed. Dir is
// opened with os.OpenRoot, so a symbolic link inside it cannot lead
// outside either. The dev-server proxy forwards to the one configured
// address only and refuses cross-origin WebSocket upgrades.
package spa

import (
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"net/url"
	"os"
	"time"

	"github.com/gofiber/fiber/v2"
)

// Config selects what the handler serves. Exactly one source is used:
// DevURL, else Dir, else FS. The yaml tags are the keys of bffgate's
// gateway.spa.
type Config struct {
	// FS is an embedded SPA whose root holds index.html.
	FS fs.FS
	// Dir is a built SPA directory on disk holding index.html; it overrides
	// FS. Files are read at request time, so a rebuild is served without a
	// restart.
	Dir string `yaml:"dir"`
	// DevURL is the base URL of a dev server (http or https, no path) to
	// proxy every request to, WebSocket upgrades included; it overrides Dir
	// and FS.
	DevURL string `yaml:"dev_url"`
	// DevIdleTimeout closes pooled connections to the dev server once idle
	// this long; zero means 4 s, under the 5 s after which Node's http
	// server (Vite's) closes them. Keep it below the dev server's
	// keep-alive timeout.
	DevIdleTimeout time.Duration `yaml:"dev_idle_timeout"`
	// Logger receives dev-server failures; nil means slog.Default().
	Logger *slog.Logger
}

// ErrNoSource is returned by New when Config names no SPA to serve.
var ErrNoSource = errors.New("spa: no SPA configured: set Config.FS, Config.Dir or Config.DevURL")

// New returns a handler serving the configured SPA.
func New(cfg Config) (fiber.Handler, error) {
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	switch {
	case cfg.DevURL != "":
		u, err := url.Parse(cfg.DevURL)
		if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" ||
			(u.Path != "" && u.Path != "/") || u.RawQuery != "" || u.Fragment != "" || u.User != nil {
			return nil, fmt.Errorf("spa: Config.DevURL %q must be an http(s) URL without path, query or credentials, e.g. http://localhost:5173", cfg.DevURL)
		}
		if cfg.DevIdleTimeout < 0 {
			return nil, fmt.Errorf("spa: Config.DevIdleTimeout %s must not be negative (zero means 4s)", cfg.DevIdleTimeout)
		}
		return newDevProxy(u, cfg.DevIdleTimeout, cfg.Logger).handle, nil
	case cfg.Dir != "":
		root, err := os.OpenRoot(cfg.Dir)
		if err != nil {
			return nil, fmt.Errorf("spa: Config.Dir: %w", err)
		}
		return newFiles(root.FS(), "Config.Dir "+cfg.Dir)
	case cfg.FS != nil:
		return newFiles(cfg.FS, "Config.FS")
	}
	return nil, ErrNoSource
}
