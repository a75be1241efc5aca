package tokens

import (
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/url"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"golang.org/x/oauth2"
)

// Defaults filled in by New for zero Config fields.
const (
	DefaultSkew        = 30 * time.Second
	DefaultGraceWindow = 10 * time.Second
	DefaultLockTTL     = 30 * time.Second
	// DefaultClientTokenLifetime is how long a client-credentials token
	// without expires_in is cached.
	DefaultClientTokenLifetime = 5 * time.Minute
)

// Config configures a Manager. The fields with yaml tags are the keys of
// bffgate's gateway.refresh; the others are runtime pieces.
type Config struct {
	// OAuth2 names the client and the provider's token endpoint; package
	// bff fills it from discovery. Endpoint.TokenURL and ClientID are
	// required. The Manager keeps its own copy.
	OAuth2 *oauth2.Config
	// HTTPClient calls the token and revocation endpoints; nil means a
	// client with a 10s timeout. Its timeout bounds every refresh.
	HTTPClient *http.Client

	// Skew refreshes an access token this long before it expires
	// (DefaultSkew when zero).
	Skew time.Duration `yaml:"skew"`
	// GraceWindow is how long a rotated-away refresh token still obtains
	// the tokens that replaced it (DefaultGraceWindow when zero). Keep it
	// short: it is the time a stolen old cookie would keep working.
	GraceWindow time.Duration `yaml:"grace_window"`
	// Grace keeps the grace records; nil means an in-process MemoryGrace.
	// Several gateway instances sharing cookie keys need a shared one.
	Grace GraceStore
	// Locker serialises refreshes of one session; nil means an
	// in-process lock. Several gateway instances on one server-side store
	// need a shared one. A FencedLocker is asked before saving whether
	// the lock was held throughout (see "Fencing" in the package doc).
	Locker Locker
	// LockTTL bounds how long a refresh holds the lock
	// (DefaultLockTTL when zero); keep it above HTTPClient's timeout. A
	// refresh that outlasts it is counted as result="lock_lost".
	LockTTL time.Duration

	// ClientScopes are requested with the client-credentials grant.
	ClientScopes []string
	// ClientParams are extra token request parameters for the
	// client-credentials grant (e.g. audience, resource).
	ClientParams url.Values

	// RevocationURL is the provider's RFC 7009 revocation endpoint
	// (revocation_endpoint in discovery); empty disables Revoke.
	RevocationURL string

	// Now is the clock; nil means time.Now.
	Now func() time.Time
	// Logger receives refresh outcomes; nil means slog.Default().
	Logger *slog.Logger
	// Registerer receives the metrics; nil means none are kept.
	Registerer prometheus.Registerer
}

// DefaultConfig returns a Config with the defaults filled in and no
// provider.
func DefaultConfig() Config {
	return Config{
		Skew:        DefaultSkew,
		GraceWindow: DefaultGraceWindow,
		LockTTL:     DefaultLockTTL,
	}
}

// FieldError is a configuration error at one field; Path is its yaml key
// (grace_window).
type FieldError struct {
	Path string
	Msg  string
}

func (e *FieldError) Error() string { return "tokens: " + e.Path + ": " + e.Msg }

// Is makes a FieldError match ErrInvalidConfig.
func (e *FieldError) Is(target error) bool { return target == ErrInvalidConfig }

// Field and Problem let a configuration loader report the error under its
// own key names.
func (e *FieldError) Field() string   { return e.Path }
func (e *FieldError) Problem() string { return e.Msg }

// Validate checks the durations a configuration file sets (the runtime
// pieces are checked by New); every problem is a *FieldError, joined.
func (c Config) Validate() error {
	var errs []error
	for _, d := range []struct {
		path string
		v    time.Duration
	}{{"skew", c.Skew}, {"grace_window", c.GraceWindow}, {"lock_ttl", c.LockTTL}} {
		if d.v < 0 {
			errs = append(errs, &FieldError{d.path, fmt.Sprintf("must not be negative (%s); zero means the default", d.v)})
		}
	}
	return errors.Join(errs...)
}

func (c *Config) fill() error {
	if c.OAuth2 == nil {
		return fmt.Errorf("%w: oauth2: the provider's client configuration is required (package bff sets it after discovery)", ErrInvalidConfig)
	}
	o := *c.OAuth2
	o.Scopes = append([]string(nil), o.Scopes...)
	c.OAuth2 = &o
	if o.ClientID == "" {
		return fmt.Errorf("%w: oauth2.clientID is required", ErrInvalidConfig)
	}
	if err := absURL(o.Endpoint.TokenURL); err != nil {
		return fmt.Errorf("%w: oauth2.endpoint.tokenURL: %v", ErrInvalidConfig, err)
	}
	if c.RevocationURL != "" {
		if err := absURL(c.RevocationURL); err != nil {
			return fmt.Errorf("%w: revocationURL: %v", ErrInvalidConfig, err)
		}
	}
	if err := c.Validate(); err != nil {
		return err
	}
	if c.Skew == 0 {
		c.Skew = DefaultSkew
	}
	if c.GraceWindow == 0 {
		c.GraceWindow = DefaultGraceWindow
	}
	if c.LockTTL == 0 {
		c.LockTTL = DefaultLockTTL
	}
	if c.HTTPClient == nil {
		c.HTTPClient = &http.Client{Timeout: 10 * time.Second}
	}
	if c.Now == nil {
		c.Now = time.Now
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	if c.Grace == nil {
		c.Grace = &MemoryGrace{Now: c.Now}
	}
	if c.Locker == nil {
		c.Locker = NewMemoryLocker()
	}
	c.ClientScopes = append([]string(nil), c.ClientScopes...)
	params := url.Values{}
	for k, v := range c.ClientParams {
		params[k] = append([]string(nil), v...)
	}
	c.ClientParams = params
	return nil
}

func absURL(s string) error {
	u, err := url.Parse(s)
	if err != nil {
		return err
	}
	if (u.Scheme != "https" && u.Scheme != "http") || u.Host == "" {
		return fmt.Errorf("%q must be an absolute http(s) URL", s)
	}
	return nil
}
