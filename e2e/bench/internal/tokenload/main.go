// Command tokenload drives the issuer's token endpoint for the load
// benchmark's issuer rows whose requests cannot be replayed, which wrk
// (one request, sent again and again) cannot do: authorization codes, each
// redeemed once, and refresh tokens, each rotated by its use (sending one
// twice would be reuse, and revoke the grant).
//
//	tokenload -url http://127.0.0.1:9090/token -mode code -items codes.txt \
//	    -form 'redirect_uri=...&code_verifier=...' -auth 'Basic ...' -conns 32 -duration 10s
//
// In code mode the connections share the codes of -items (one per line)
// and the run ends when they are used up or the duration has passed. In
// refresh mode each connection owns one refresh token of -items and sends
// the one each answer rotated it to, until the duration has passed; a
// refused refresh ends that connection's grant. It runs as its own process
// (the benchmark builds and starts it), on fasthttp's client, so that the
// issuer's CPU time read from /proc is the issuer's alone, and prints one
// line "BENCH_JSON {...}" with the figures wrk's script prints.
package main

import (
	"bufio"
	"bytes"
	"encoding/json"
	"flag"
	"fmt"
	"log"
	"net/url"
	"os"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/valyala/fasthttp"
)

func main() {
	target := flag.String("url", "", "the token endpoint, such as http://127.0.0.1:9090/token")
	mode := flag.String("mode", "", "code or refresh")
	itemsPath := flag.String("items", "", "file of codes or refresh tokens, one per line")
	form := flag.String("form", "", "more form fields, url-encoded (redirect_uri=...&code_verifier=...)")
	auth := flag.String("auth", "", "Authorization header value (client_secret_basic)")
	conns := flag.Int("conns", 32, "connections (one worker each)")
	dur := flag.Duration("duration", 10*time.Second, "longest run")
	flag.Parse()
	u, err := url.Parse(*target)
	if err != nil || u.Scheme != "http" || u.Host == "" {
		log.Fatalf("tokenload: -url %q: want an http:// URL", *target)
	}
	var grant string
	switch *mode {
	case "code":
		grant = "grant_type=authorization_code&code="
	case "refresh":
		grant = "grant_type=refresh_token&refresh_token="
	default:
		log.Fatalf("tokenload: -mode %q: want code or refresh", *mode)
	}
	items, err := readLines(*itemsPath)
	if err != nil {
		log.Fatalf("tokenload: -items: %v", err)
	}
	if *mode == "refresh" && len(items) < *conns {
		log.Fatalf("tokenload: %d refresh tokens for %d connections: want one each", len(items), *conns)
	}
	extra := ""
	if *form != "" {
		extra = "&" + *form
	}
	hc := &fasthttp.HostClient{Addr: u.Host, MaxConns: *conns, ReadTimeout: 30 * time.Second, WriteTimeout: 30 * time.Second}

	var next atomic.Int64 // code mode: the next item
	var ok, bad atomic.Int64
	lat := make([][]time.Duration, *conns)
	var firstErr atomic.Value
	start := time.Now()
	deadline := start.Add(*dur)
	var wg sync.WaitGroup
	for w := range *conns {
		wg.Add(1)
		go func() {
			defer wg.Done()
			req, resp := fasthttp.AcquireRequest(), fasthttp.AcquireResponse()
			defer fasthttp.ReleaseRequest(req)
			defer fasthttp.ReleaseResponse(resp)
			item := ""
			if *mode == "refresh" {
				item = items[w]
			}
			for time.Now().Before(deadline) {
				if *mode == "code" {
					i := next.Add(1) - 1
					if int(i) >= len(items) {
						return
					}
					item = items[i]
				}
				req.Reset()
				req.SetRequestURI(*target)
				req.Header.SetMethod(fasthttp.MethodPost)
				req.Header.SetContentType("application/x-www-form-urlencoded")
				if *auth != "" {
					req.Header.Set("Authorization", *auth)
				}
				req.SetBodyString(grant + url.QueryEscape(item) + extra)
				t0 := time.Now()
				err := hc.Do(req, resp)
				d := time.Since(t0)
				if err == nil && resp.StatusCode() != fasthttp.StatusOK {
					err = fmt.Errorf("status %d: %.200s", resp.StatusCode(), resp.Body())
				}
				if err == nil && *mode == "refresh" {
					item, err = refreshToken(resp.Body())
				}
				if err != nil {
					bad.Add(1)
					firstErr.CompareAndSwap(nil, err.Error())
					if *mode == "refresh" {
						return // the grant is gone
					}
					continue
				}
				ok.Add(1)
				lat[w] = append(lat[w], d)
			}
		}()
	}
	wg.Wait()
	elapsed := time.Since(start)
	all := slices.Concat(lat...)
	slices.Sort(all)
	pct := func(p float64) float64 {
		if len(all) == 0 {
			return 0
		}
		return float64(all[min(len(all)-1, int(p/100*float64(len(all))))].Microseconds())
	}
	var sum time.Duration
	for _, d := range all {
		sum += d
	}
	mean := 0.0
	if len(all) > 0 {
		mean = float64(sum.Microseconds()) / float64(len(all))
	}
	if e, _ := firstErr.Load().(string); e != "" {
		fmt.Fprintf(os.Stderr, "tokenload: %d failed; first: %s\n", bad.Load(), e)
	}
	out, _ := json.Marshal(map[string]float64{
		"requests": float64(ok.Load() + bad.Load()), "duration_us": float64(elapsed.Microseconds()), "bytes": 0,
		"connect_errors": 0, "read_errors": 0, "write_errors": 0, "timeouts": 0,
		"status_errors": float64(bad.Load()), "non2xx": float64(bad.Load()),
		"p50_us": pct(50), "p90_us": pct(90), "p99_us": pct(99), "p999_us": pct(99.9), "max_us": pct(100), "mean_us": mean,
	})
	fmt.Printf("BENCH_JSON %s\n", out)
}

// refreshToken is the refresh_token of a token response (RFC 6749 §5.1).
func refreshToken(body []byte) (string, error) {
	var r struct {
		RefreshToken string `json:"refresh_token"`
	}
	if err := json.Unmarshal(body, &r); err != nil || r.RefreshToken == "" {
		return "", fmt.Errorf("no refresh_token in the answer (%d bytes)", len(body))
	}
	return r.RefreshToken, nil
}

func readLines(path string) ([]string, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	var out []string
	sc := bufio.NewScanner(bytes.NewReader(b))
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		if l := bytes.TrimSpace(sc.Bytes()); len(l) > 0 {
			out = append(out, string(l))
		}
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("%s holds no items", path)
	}
	return out, sc.Err()
}
