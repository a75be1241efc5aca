package spa

import (
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"mime"
	"net/http"
	"path"
	"strings"
	"sync"
	"time"

	"github.com/gofiber/fiber/v2"
)

// Cache-Control values.
const (
	cacheImmutable  = "public, max-age=31536000, immutable"
	cacheRevalidate = "no-cache"
)

// maxFile bounds one served file: an SPA's bundles are a few MB; anything
// far larger is a mistake (a video in dist/), and is refused rather than
// read into memory whole.
const maxFile = 64 << 20

// files serves a built SPA from an fs.FS.
type files struct {
	fsys fs.FS

	mu    sync.Mutex
	etags map[etagKey]string
}

// etagKey identifies one version of a file without reading it: a rebuilt
// file changes size or modification time (embedded files have neither
// changing, nor changing content).
type etagKey struct {
	name  string
	size  int64
	mtime time.Time
}

// maxETags bounds the ETag cache; past it the cache restarts.
const maxETags = 4096

func newFiles(fsys fs.FS, what string) (fiber.Handler, error) {
	st, err := fs.Stat(fsys, "index.html")
	if err != nil {
		return nil, fmt.Errorf("spa: %s holds no index.html (is it the build output directory?): %w", what, err)
	}
	if !st.Mode().IsRegular() {
		return nil, fmt.Errorf("spa: %s: index.html is not a regular file", what)
	}
	f := &files{fsys: fsys, etags: make(map[etagKey]string)}
	return f.handle, nil
}

func (f *files) handle(c *fiber.Ctx) error {
	if c.Method() != fiber.MethodGet && c.Method() != fiber.MethodHead {
		c.Set(fiber.HeaderAllow, "GET, HEAD")
		return c.Status(fiber.StatusMethodNotAllowed).SendString("method not allowed: the SPA's files are read with GET\n")
	}
	name, ok := cleanName(c.Path())
	if !ok {
		return notFound(c)
	}
	if name == "" {
		name = "index.html"
	}
	err := f.serve(c, name)
	if err == nil {
		return nil
	}
	if !errors.Is(err, fs.ErrNotExist) && !errors.Is(err, errIsDir) {
		return err
	}
	// History-API fallback: a navigation to a client-side route.
	if path.Ext(name) == "" && acceptsHTML(c.Get(fiber.HeaderAccept)) {
		return f.serve(c, "index.html")
	}
	return notFound(c)
}

var errIsDir = errors.New("spa: is a directory")

func notFound(c *fiber.Ctx) error {
	c.Set(fiber.HeaderCacheControl, cacheRevalidate)
	c.Set(fiber.HeaderContentType, fiber.MIMETextPlainCharsetUTF8)
	return c.Status(fiber.StatusNotFound).SendString("not found\n")
}

// cleanName maps a request path to a name inside the FS: "" for the root,
// ok false for anything that must not be served (dot files, invalid
// paths). fasthttp has already decoded and normalized the path; cleaning
// again costs nothing and does not depend on that.
func cleanName(p string) (string, bool) {
	if strings.ContainsAny(p, "\\\x00") {
		return "", false
	}
	name := strings.TrimPrefix(path.Clean("/"+p), "/")
	if name == "" {
		return "", true
	}
	if !fs.ValidPath(name) {
		return "", false
	}
	for _, seg := range strings.Split(name, "/") {
		if strings.HasPrefix(seg, ".") {
			return "", false
		}
	}
	return name, true
}

// acceptsHTML reports whether an Accept header admits text/html: browsers
// navigating send it; fetch() sends */*, which admits it too.
func acceptsHTML(accept string) bool {
	if accept == "" {
		return false
	}
	for _, part := range strings.Split(accept, ",") {
		mt, params, err := mime.ParseMediaType(strings.TrimSpace(part))
		if err != nil {
			continue
		}
		if params["q"] == "0" || params["q"] == "0.0" || params["q"] == "0.00" || params["q"] == "0.000" {
			continue
		}
		switch mt {
		case "text/html", "application/xhtml+xml", "text/*", "*/*":
			return true
		}
	}
	return false
}

// serve writes the file name, or returns fs.ErrNotExist / errIsDir without
// writing anything.
func (f *files) serve(c *fiber.Ctx, name string) error {
	file, err := f.fsys.Open(name)
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) || errors.Is(err, fs.ErrInvalid) || errors.Is(err, fs.ErrPermission) {
			return fs.ErrNotExist
		}
		return fmt.Errorf("spa: open %s: %w", name, err)
	}
	defer file.Close()
	st, err := file.Stat()
	if err != nil {
		return fmt.Errorf("spa: stat %s: %w", name, err)
	}
	if st.IsDir() {
		return errIsDir
	}
	if !st.Mode().IsRegular() {
		return fs.ErrNotExist
	}
	if st.Size() > maxFile {
		return fmt.Errorf("spa: %s is %d bytes, larger than the %d this server sends", name, st.Size(), maxFile)
	}
	body, err := io.ReadAll(io.LimitReader(file, maxFile+1))
	if err != nil {
		return fmt.Errorf("spa: read %s: %w", name, err)
	}
	etag := f.etag(etagKey{name: name, size: st.Size(), mtime: st.ModTime()}, body)

	c.Set(fiber.HeaderContentType, contentType(name))
	c.Set(fiber.HeaderXContentTypeOptions, "nosniff")
	c.Set(fiber.HeaderETag, etag)
	if hashedName(name) {
		c.Set(fiber.HeaderCacheControl, cacheImmutable)
	} else {
		c.Set(fiber.HeaderCacheControl, cacheRevalidate)
	}
	if !st.ModTime().IsZero() {
		c.Set(fiber.HeaderLastModified, st.ModTime().UTC().Format(http.TimeFormat))
	}
	if etagMatches(c.Get(fiber.HeaderIfNoneMatch), etag) {
		return c.SendStatus(fiber.StatusNotModified)
	}
	c.Status(fiber.StatusOK)
	if c.Method() == fiber.MethodHead {
		c.Response().Header.SetContentLength(len(body))
		c.Response().SkipBody = true
		return nil
	}
	return c.Send(body)
}

// etag returns the strong ETag of a file version, hashing it once.
func (f *files) etag(k etagKey, body []byte) string {
	f.mu.Lock()
	e, ok := f.etags[k]
	f.mu.Unlock()
	if ok {
		return e
	}
	sum := sha256.Sum256(body)
	e = `"` + base64.RawURLEncoding.EncodeToString(sum[:16]) + `"`
	f.mu.Lock()
	if len(f.etags) >= maxETags {
		clear(f.etags)
	}
	f.etags[k] = e
	f.mu.Unlock()
	return e
}

// etagMatches implements If-None-Match's weak comparison (RFC 9110
// §13.1.2) for our single strong tag.
func etagMatches(header, etag string) bool {
	if header == "" {
		return false
	}
	for _, t := range strings.Split(header, ",") {
		t = strings.TrimSpace(t)
		if t == "*" || strings.TrimPrefix(t, "W/") == etag {
			return true
		}
	}
	return false
}

// webTypes are the content types of a web build, fixed here rather than
// taken from /etc/mime.types, which differs between machines (and on some
// maps .js to application/x-javascript).
var webTypes = map[string]string{
	".html":        "text/html; charset=utf-8",
	".htm":         "text/html; charset=utf-8",
	".js":          "text/javascript; charset=utf-8",
	".mjs":         "text/javascript; charset=utf-8",
	".cjs":         "text/javascript; charset=utf-8",
	".css":         "text/css; charset=utf-8",
	".json":        "application/json",
	".map":         "application/json",
	".webmanifest": "application/manifest+json",
	".txt":         "text/plain; charset=utf-8",
	".xml":         "application/xml",
	".svg":         "image/svg+xml",
	".png":         "image/png",
	".jpg":         "image/jpeg",
	".jpeg":        "image/jpeg",
	".gif":         "image/gif",
	".webp":        "image/webp",
	".avif":        "image/avif",
	".ico":         "image/x-icon",
	".woff":        "font/woff",
	".woff2":       "font/woff2",
	".ttf":         "font/ttf",
	".otf":         "font/otf",
	".wasm":        "application/wasm",
	".mp4":         "video/mp4",
	".webm":        "video/webm",
	".mp3":         "audio/mpeg",
	".pdf":         "application/pdf",
}

func contentType(name string) string {
	ext := strings.ToLower(path.Ext(name))
	if t, ok := webTypes[ext]; ok {
		return t
	}
	if t := mime.TypeByExtension(ext); t != "" {
		return t
	}
	return "application/octet-stream"
}

// hashedName reports whether a file name carries a content hash, so its
// content can never change under that name:
//
//   - webpack, Create React App, Parcel: a dot-separated run of 8 or more
//     hex digits holding at least one digit: app.3f9a1c2b.js,
//     main.3f9a1c2b.chunk.js;
//   - Vite and Rollup: "-" and exactly 8 base64url characters before the
//     extension, holding at least one digit or upper-case letter:
//     assets/index-AbC123de.js, index-D8s-Ab1Z.css.
//
// A plain word (app-settings.js, vendor.lodash.js) is not a hash: guessing
// wrong that way only costs a revalidation, while the other way would pin
// a stale file in browsers for a year, so the rules lean to "not hashed".
func hashedName(name string) bool {
	base := path.Base(name)
	ext := path.Ext(base)
	if ext == "" || base == "index.html" {
		return false
	}
	stem := strings.TrimSuffix(base, ext)
	// webpack: any dot-separated part of the stem.
	parts := strings.Split(stem, ".")
	for _, p := range parts[1:] {
		if len(p) >= 8 && len(p) <= 64 && isHex(p) && strings.ContainsAny(p, "0123456789") {
			return true
		}
	}
	// Vite / Rollup: name-XXXXXXXX.
	if len(stem) > 9 && stem[len(stem)-9] == '-' {
		h := stem[len(stem)-8:]
		return isBase64URL(h) && strings.ContainsAny(h, "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ")
	}
	return false
}

func isHex(s string) bool {
	for i := 0; i < len(s); i++ {
		b := s[i]
		if !(b >= '0' && b <= '9' || b >= 'a' && b <= 'f') {
			return false
		}
	}
	return true
}

func isBase64URL(s string) bool {
	for i := 0; i < len(s); i++ {
		b := s[i]
		if !(b >= '0' && b <= '9' || b >= 'a' && b <= 'z' || b >= 'A' && b <= 'Z' || b == '-' || b == '_') {
			return false
		}
	}
	return true
}
