// Command upstream is the load benchmark's API server: it answers every
// request with the same small JSON body, as fast as the machine allows,
// so that what the benchmark measures is the gateway in front of it.
//
// It runs on fasthttp rather than net/http because it is the ceiling of
// every scenario: fasthttp serves a tiny keep-alive response with about
// half of net/http's CPU per request (no per-request goroutine, header map
// or allocation), which leaves more of the shared cores to the gateway
// under test and makes scenario (a) a truer ceiling. It runs as its own
// process (the benchmark builds and starts it) so that its CPU time and
// garbage collection never mix with the gateway's or the test's.
//
// It prints "listening on http://ADDR" once it accepts connections.
// GET /__stats answers {"total":N,"bearer":M,"bodies":B,"body_bytes":S}:
// the requests served, how many carried "Authorization: Bearer ...", which
// lets the benchmark check that a gateway really attached a token to what
// it measured, and how many had a body and its bytes (the POST rows).
package main

import (
	"bytes"
	"flag"
	"fmt"
	"log"
	"net"
	"os"
	"sync/atomic"

	"github.com/valyala/fasthttp"
)

var body = []byte(`{"items":[{"id":1,"name":"alpha","done":false},{"id":2,"name":"beta","done":true}],"total":2}`)

func main() {
	addr := flag.String("addr", "127.0.0.1:0", "listen address")
	flag.Parse()
	ln, err := net.Listen("tcp4", *addr)
	if err != nil {
		log.Fatalf("upstream: listen %s: %v", *addr, err)
	}
	var total, bearer, bodies, bodyBytes atomic.Int64
	prefix := []byte("Bearer ")
	srv := &fasthttp.Server{
		Name: "bench-upstream",
		// oauth2-proxy forwards its own session cookie (several KiB) next
		// to the bearer token; the default 4 KiB buffer would refuse it.
		ReadBufferSize:                64 << 10,
		NoDefaultDate:                 true,
		DisableHeaderNamesNormalizing: true,
		Handler: func(ctx *fasthttp.RequestCtx) {
			if string(ctx.Path()) == "/__stats" {
				ctx.SetContentType("application/json")
				fmt.Fprintf(ctx, `{"total":%d,"bearer":%d,"bodies":%d,"body_bytes":%d}`, total.Load(), bearer.Load(), bodies.Load(), bodyBytes.Load())
				return
			}
			total.Add(1)
			if bytes.HasPrefix(ctx.Request.Header.Peek("Authorization"), prefix) {
				bearer.Add(1)
			}
			if n := len(ctx.PostBody()); n > 0 {
				bodies.Add(1)
				bodyBytes.Add(int64(n))
			}
			ctx.SetContentType("application/json")
			ctx.SetBody(body)
		},
	}
	fmt.Fprintf(os.Stdout, "listening on http://%s\n", ln.Addr())
	if err := srv.Serve(ln); err != nil {
		log.Fatalf("upstream: %v", err)
	}
}
