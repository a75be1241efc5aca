// Package testhttp holds the HTTP client this module's tests use in place
// of net/http's package-level one (http.DefaultClient, http.Get,
// http.Post, ...).
//
// httptest.Server.Close closes the idle connections of
// http.DefaultTransport. A test running in parallel with another that
// shares that transport can have the connection its request just took
// closed under it, and fails with "http: CloseIdleConnections called".
// Client has a transport of its own that no test server closes;
// TestNoPackageLevelClient keeps the package-level client out of the
// module.
package testhttp

import "net/http"

// Client is an HTTP client with a transport of its own (a clone of
// http.DefaultTransport's settings), safe to share between parallel
// tests. It follows redirects and keeps no cookies, as
// http.DefaultClient does.
var Client = &http.Client{Transport: Transport()}

// Transport returns a new transport with http.DefaultTransport's
// settings and a connection pool of its own.
func Transport() *http.Transport {
	return http.DefaultTransport.(*http.Transport).Clone()
}
