// Package adminsock is the local admin channel of a running bffgate: a
// small HTTP API on a Unix socket in the data directory, for the
// operator's commands that must act while `bffgate serve` holds the data
// file (`bffgate agents disable|enable`). It opens no network port. Who
// may use it: a process that can reach the socket file (mode 0600, in the
// data directory that bffgate creates 0700) and, where the system tells
// the peer's credentials (Linux: SO_PEERCRED), runs as the server's user.
package adminsock

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"syscall"
	"time"

	"github.com/bffgate/bffgate/issuer"
	"github.com/bffgate/bffgate/issuer/storage"
)

// FileName is the socket's name in the data directory.
const FileName = "admin.sock"

// maxPath is the longest socket path the kernel binds (sun_path is 108
// bytes on Linux, 104 on the BSDs, with its terminating NUL).
const maxPath = 103

// maxBody bounds a request body.
const maxBody = 4 << 10

// statePath is the one operation: set a client's state.
const statePath = "/v1/clients/state"

// opTimeout bounds one operation at the store.
const opTimeout = 15 * time.Second

// Errors.
var (
	// ErrNotRunning: no bffgate answers on the data directory's socket.
	ErrNotRunning = errors.New("no running bffgate answers on this data directory's admin socket")
	// ErrPathTooLong: the socket path is longer than a Unix socket path
	// may be; the data directory needs a shorter path.
	ErrPathTooLong = errors.New("the admin socket path is too long for a Unix socket")
)

// Path is the admin socket of the data directory dir.
func Path(dir string) string { return filepath.Join(dir, FileName) }

// Agents is what the socket acts on: the embedded issuer.
type Agents interface {
	SetClientState(ctx context.Context, id string, disabled bool, via string) (storage.ClientState, error)
}

// stateRequest is the body of a POST to statePath.
type stateRequest struct {
	ClientID string `json:"client_id"`
	Disabled bool   `json:"disabled"`
}

// stateResponse is its answer.
type stateResponse struct {
	ClientID  string    `json:"client_id"`
	Disabled  bool      `json:"disabled"`
	NotBefore time.Time `json:"not_before"`
	Changed   time.Time `json:"changed"`
}

// errorResponse is every refusal.
type errorResponse struct {
	Error string `json:"error"`
}

// Server serves the admin API on the socket until Close.
type Server struct {
	path string
	ln   net.Listener
	srv  *http.Server
	log  *slog.Logger
}

type peerKey struct{}

// Listen binds the admin socket in the data directory dir. The caller
// holds the data directory (its data file's lock), so a socket file found
// there is a stale one of a process that was killed: it is replaced.
// Anything else under that name is left alone and is an error.
func Listen(dir string, agents Agents, log *slog.Logger) (*Server, error) {
	path := Path(dir)
	if len(path) > maxPath {
		return nil, fmt.Errorf("%w: %s (%d bytes, at most %d)", ErrPathTooLong, path, len(path), maxPath)
	}
	if fi, err := os.Lstat(path); err == nil {
		if fi.Mode().Type() != fs.ModeSocket {
			return nil, fmt.Errorf("%s exists and is not a socket: move it away, bffgate keeps its admin socket there", path)
		}
		if err := os.Remove(path); err != nil {
			return nil, fmt.Errorf("removing the stale admin socket %s: %w", path, err)
		}
		log.Info("replaced a stale admin socket (a bffgate that did not stop cleanly)", "path", path)
	}
	ln, err := net.Listen("unix", path)
	if err != nil {
		return nil, fmt.Errorf("admin socket: %w", err)
	}
	// Connecting needs write permission on the socket file: 0600 is the
	// guard where the peer's uid is not known, and on Linux a second one
	// (the data directory is 0700 when bffgate made it; the umask's mode
	// between bind and chmod grants others no write with the usual 022).
	if err := os.Chmod(path, 0o600); err != nil {
		ln.Close()
		return nil, fmt.Errorf("admin socket: %w", err)
	}
	s := &Server{path: path, ln: ln, log: log}
	mux := http.NewServeMux()
	mux.HandleFunc(statePath, func(w http.ResponseWriter, r *http.Request) { s.setState(w, r, agents) })
	s.srv = &http.Server{
		Handler:           mux,
		ReadHeaderTimeout: 5 * time.Second,
		ReadTimeout:       10 * time.Second,
		WriteTimeout:      opTimeout + 5*time.Second,
		ErrorLog:          slog.NewLogLogger(log.Handler(), slog.LevelWarn),
		ConnContext: func(ctx context.Context, c net.Conn) context.Context {
			return context.WithValue(ctx, peerKey{}, peerAllowed(c))
		},
	}
	return s, nil
}

// Path is where the socket listens.
func (s *Server) Path() string { return s.path }

// Serve answers on the socket until Close.
func (s *Server) Serve() error {
	if err := s.srv.Serve(s.ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
		return fmt.Errorf("admin socket: %w", err)
	}
	return nil
}

// Close stops answering, lets an operation under way finish within ctx,
// and removes the socket file.
func (s *Server) Close(ctx context.Context) error {
	err := s.srv.Shutdown(ctx)
	if rerr := os.Remove(s.path); rerr != nil && !errors.Is(rerr, fs.ErrNotExist) && err == nil {
		err = rerr
	}
	return err
}

func (s *Server) setState(w http.ResponseWriter, r *http.Request, agents Agents) {
	if err, _ := r.Context().Value(peerKey{}).(error); err != nil {
		s.log.Warn("admin socket: refused a connection", "err", err)
		reply(w, http.StatusForbidden, errorResponse{err.Error()})
		return
	}
	if r.Method != http.MethodPost {
		w.Header().Set("Allow", http.MethodPost)
		reply(w, http.StatusMethodNotAllowed, errorResponse{"POST only"})
		return
	}
	var req stateRequest
	dec := json.NewDecoder(http.MaxBytesReader(w, r.Body, maxBody))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&req); err != nil || req.ClientID == "" {
		reply(w, http.StatusBadRequest, errorResponse{"want a JSON object {\"client_id\": ..., \"disabled\": true|false}"})
		return
	}
	verb := "enable"
	if req.Disabled {
		verb = "disable"
	}
	// The change is made whole even when the command gives up waiting.
	ctx, cancel := context.WithTimeout(context.WithoutCancel(r.Context()), opTimeout)
	defer cancel()
	st, err := agents.SetClientState(ctx, req.ClientID, req.Disabled, "bffgate agents "+verb+" (admin socket)")
	switch {
	case errors.Is(err, issuer.ErrUnknownClient):
		reply(w, http.StatusNotFound, errorResponse{err.Error()})
	case err != nil:
		s.log.Error("admin socket: setting a client's state failed", "client_id", req.ClientID, "err", err)
		reply(w, http.StatusInternalServerError, errorResponse{"the issuer's store refused the change: " + err.Error()})
	default:
		reply(w, http.StatusOK, stateResponse{ClientID: req.ClientID, Disabled: st.Disabled, NotBefore: st.NotBefore, Changed: st.Changed})
	}
}

func reply(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	json.NewEncoder(w).Encode(v)
}

// SetClientState asks the bffgate running on the data directory dir to
// disable or enable the client id. It returns an error wrapping
// ErrNotRunning when nothing answers there (no bffgate runs on dir, or
// one that runs has no socket): the caller may then open the store
// itself.
func SetClientState(ctx context.Context, dir, id string, disabled bool) (storage.ClientState, error) {
	path := Path(dir)
	if len(path) > maxPath {
		// No server could bind it either.
		return storage.ClientState{}, fmt.Errorf("%w (%w: %s)", ErrNotRunning, ErrPathTooLong, path)
	}
	c := &http.Client{
		Timeout: opTimeout + 5*time.Second,
		Transport: &http.Transport{
			DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
				var d net.Dialer
				return d.DialContext(ctx, "unix", path)
			},
			DisableKeepAlives: true,
		},
	}
	body, _ := json.Marshal(stateRequest{ClientID: id, Disabled: disabled})
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, "http://bffgate-admin"+statePath, bytes.NewReader(body))
	if err != nil {
		return storage.ClientState{}, err
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := c.Do(req)
	if err != nil {
		return storage.ClientState{}, dialError(path, err)
	}
	defer resp.Body.Close()
	raw, err := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
	if err != nil {
		return storage.ClientState{}, fmt.Errorf("reading the answer of the running bffgate on %s: %w", path, err)
	}
	if resp.StatusCode != http.StatusOK {
		var e errorResponse
		if json.Unmarshal(raw, &e) != nil || e.Error == "" {
			e.Error = resp.Status
		}
		return storage.ClientState{}, &RefusedError{Status: resp.StatusCode, Message: e.Error}
	}
	var out stateResponse
	if err := json.Unmarshal(raw, &out); err != nil {
		return storage.ClientState{}, fmt.Errorf("the running bffgate on %s answered no client state: %w", path, err)
	}
	return storage.ClientState{Disabled: out.Disabled, NotBefore: out.NotBefore, Changed: out.Changed}, nil
}

// RefusedError is the running bffgate's refusal of an operation.
type RefusedError struct {
	Status  int
	Message string
}

func (e *RefusedError) Error() string { return "the running bffgate refused: " + e.Message }

// NotFound reports whether the running bffgate has no such client.
func (e *RefusedError) NotFound() bool { return e.Status == http.StatusNotFound }

// dialError tells a socket nobody answers on (ErrNotRunning) from one the
// user may not use.
func dialError(path string, err error) error {
	switch {
	case errors.Is(err, syscall.ENOENT), errors.Is(err, syscall.ECONNREFUSED):
		return fmt.Errorf("%w (%s)", ErrNotRunning, path)
	case errors.Is(err, syscall.EACCES), errors.Is(err, syscall.EPERM):
		return fmt.Errorf("the admin socket %s of the running bffgate is not yours: run the command as the user bffgate runs as", path)
	}
	return fmt.Errorf("asking the running bffgate on %s: %w", path, err)
}
