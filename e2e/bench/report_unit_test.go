package bench

import (
	"encoding/json"
	"strings"
	"testing"
	"time"
)

// TestPostBody: the POST rows' body is valid JSON of exactly the size the
// upstream's count is checked against.
func TestPostBody(t *testing.T) {
	b := postBody(postBodySize)
	if len(b) != postBodySize {
		t.Fatalf("postBody: %d bytes, want %d", len(b), postBodySize)
	}
	if !json.Valid(b) {
		t.Fatalf("postBody is not JSON: %s", b)
	}
}

// TestParseLoad reads internal/tokenload's line, and refuses output
// without one.
func TestParseLoad(t *testing.T) {
	out := "tokenload: 1 failed; first: status 400\nBENCH_JSON {\"requests\":2000,\"duration_us\":2000000,\"status_errors\":1,\"non2xx\":1,\"p50_us\":1500,\"p99_us\":9000,\"p999_us\":12000,\"max_us\":15000,\"mean_us\":1800}\n"
	w, err := ParseLoad(out)
	if err != nil {
		t.Fatal(err)
	}
	if w.Requests != 2000 || w.RPS != 1000 || w.StatusErrors != 1 || w.P99 != 9*time.Millisecond {
		t.Errorf("ParseLoad = %+v", w)
	}
	if _, err := ParseLoad("tokenload: -mode \"x\": want code or refresh\n"); err == nil {
		t.Error("ParseLoad accepted output without a BENCH_JSON line")
	}
}

// TestReportWrite: RESULTS.md is written from partial results (no Redis,
// no soak, no issuer rows) without a panic, says what was not measured,
// and computes the ratios against both bare proxies and the per-instance
// CPU of the scale-out row.
func TestReportWrite(t *testing.T) {
	m := func(rps float64, cpu time.Duration) Measurement {
		return Measurement{WrkResult: WrkResult{Requests: int64(rps * 10), RPS: rps}, CPU: cpu}
	}
	rows := []Row{
		{Key: "b", Name: "bare", Runs: []Measurement{m(40000, 4*time.Second)}},
		{Key: "n", Name: "nginx", Runs: []Measurement{m(50000, 4*time.Second)}},
		{Key: "dl", Name: "bffgate, bbolt store, default configuration", Runs: []Measurement{m(36000, 4*time.Second)}},
	}
	pair := m(30000, 6*time.Second)
	pair.Parts = []Part{{Requests: 150000, RPS: 15000, CPU: 3 * time.Second}, {Requests: 150000, RPS: 15000, CPU: 3 * time.Second}}
	rep := report{Started: time.Unix(0, 0), Duration: 10 * time.Second, Table: rows, Post: rows[:2],
		Scale: []Row{{Key: "1", Name: "one", Runs: []Measurement{m(36000, 4*time.Second)}}, {Key: "2", Name: "two", Runs: []Measurement{pair}}}}
	var b strings.Builder
	rep.write(&b)
	out := b.String()
	for _, want := range []string{
		"| dl. bffgate, bbolt store, default configuration | 0.90 | 0.72 | 1.11× | 1.39× |",
		"| dl/b ≥ 0.85 | 0.90 | met |",
		"| dl/n ≥ 0.85 | 0.72 | **missed** |",
		"| cl/b ≥ 0.85 | 0.00 | not measured |",
		"| instance 1 of 2 on Redis | 15000 | 3.00 | 20.0 | 1.80× |",
		"| CPU µs/req dl ÷ n ≤ 1.3 | 1.39× | **missed** |",
		"Not run (BFFGATE_BENCH_SOAK=0).",
		"| oauth2-proxy v7.8.1, req/s | 3,850 | – |",
		"| bbolt sessions, default configuration, req/s (÷ nginx) | 36,200 (0.58×) | 36000 (0.72×) |",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("RESULTS.md lacks %q", want)
		}
	}
	if t.Failed() {
		t.Log(out)
	}
}
