// Package static holds the demo single-page application the gateway serves
// in the zero-config run: plain HTML, CSS and ES modules, no build step, no
// external fonts or CDNs, and no inline script or style, so it runs under
// a strict Content-Security-Policy (default-src 'self').
//
// The SPA never sees a token. It calls the gateway's /bff/user and the API
// through /api with its same-origin cookie and the anti-CSRF header
// `X-CSRF: 1`, and stores nothing in localStorage, sessionStorage or
// IndexedDB. Element ids (#login, #logout, #user-name, #user-sub,
// #session-expires, #call-api, #api-result, #items, #new-item-title,
// #add-item, #status) are a contract with the end-to-end browser tests.
package static

import (
	"embed"
	"io/fs"
)

//go:embed files
var files embed.FS

// FS returns the SPA's files, index.html at the root.
func FS() fs.FS {
	sub, err := fs.Sub(files, "files")
	if err != nil {
		// fs.Sub fails only on an invalid path; "files" is a constant.
		panic(err)
	}
	return sub
}
