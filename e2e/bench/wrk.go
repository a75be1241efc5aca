package bench

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"strconv"
	"strings"
	"time"
)

// wrkScript is the Lua script every wrk run uses. It adds the session
// cookie (BENCH_COOKIE) and the anti-CSRF header; BENCH_METHOD,
// BENCH_BODY_FILE (the body, read once), BENCH_CONTENT_TYPE and
// BENCH_AUTHORIZATION make the request a POST with a body (the API's
// 1 KB JSON row, the issuer's form posts); it counts non-2xx answers
// when BENCH_COUNT_STATUS=1 (wrk's own "Non-2xx or 3xx" count misses 3xx
// redirects to a login page, and a response() hook costs wrk CPU, so it is
// on only where the count is the figure), and prints the summary with the
// HDR percentiles as one JSON line prefixed with "BENCH_JSON ".
const wrkScript = `
local cookie = os.getenv("BENCH_COOKIE")
wrk.headers["X-CSRF"] = "1"
wrk.headers["Accept"] = "application/json"
if cookie ~= nil and cookie ~= "" then
  wrk.headers["Cookie"] = cookie
end
local function setenv(name, apply)
  local v = os.getenv(name)
  if v ~= nil and v ~= "" then apply(v) end
end
setenv("BENCH_METHOD", function(v) wrk.method = v end)
setenv("BENCH_CONTENT_TYPE", function(v) wrk.headers["Content-Type"] = v end)
setenv("BENCH_AUTHORIZATION", function(v) wrk.headers["Authorization"] = v end)
setenv("BENCH_BODY_FILE", function(v)
  local f = assert(io.open(v, "rb"))
  wrk.body = f:read("*a")
  f:close()
end)

local count_status = os.getenv("BENCH_COUNT_STATUS") == "1"
local threads = {}

function setup(thread)
  table.insert(threads, thread)
end

if count_status then
  function init(args)
    non2xx = 0
  end
  function response(status, headers, body)
    if status < 200 or status > 299 then
      non2xx = non2xx + 1
    end
  end
end

function done(summary, latency, requests)
  local n = -1
  if count_status then
    n = 0
    for _, t in ipairs(threads) do
      n = n + t:get("non2xx")
    end
  end
  io.write(string.format('BENCH_JSON {"requests":%.0f,"duration_us":%.0f,"bytes":%.0f,' ..
    '"connect_errors":%.0f,"read_errors":%.0f,"write_errors":%.0f,"status_errors":%.0f,"timeouts":%.0f,' ..
    '"non2xx":%.0f,"p50_us":%.0f,"p90_us":%.0f,"p99_us":%.0f,"p999_us":%.0f,"max_us":%.0f,"mean_us":%.1f}\n',
    summary.requests, summary.duration, summary.bytes,
    summary.errors.connect, summary.errors.read, summary.errors.write, summary.errors.status, summary.errors.timeout,
    n, latency:percentile(50), latency:percentile(90), latency:percentile(99), latency:percentile(99.9),
    latency.max, latency.mean))
end
`

// WrkResult is one wrk run's figures.
type WrkResult struct {
	Requests      int64
	Duration      time.Duration
	RPS           float64
	P50, P90, P99 time.Duration
	P999, Max     time.Duration
	Mean          time.Duration
	// SocketErrors sums connect, read, write and timeout errors.
	SocketErrors int64
	// StatusErrors is wrk's count of responses with status >= 400.
	StatusErrors int64
	// Non2xx counts every response outside 200-299, or -1 when the
	// script did not count (BENCH_COUNT_STATUS unset).
	Non2xx int64
}

// wrkJSON is the line the script's done() prints.
type wrkJSON struct {
	Requests      float64 `json:"requests"`
	DurationUS    float64 `json:"duration_us"`
	Bytes         float64 `json:"bytes"`
	ConnectErrors float64 `json:"connect_errors"`
	ReadErrors    float64 `json:"read_errors"`
	WriteErrors   float64 `json:"write_errors"`
	StatusErrors  float64 `json:"status_errors"`
	Timeouts      float64 `json:"timeouts"`
	Non2xx        float64 `json:"non2xx"`
	P50US         float64 `json:"p50_us"`
	P90US         float64 `json:"p90_us"`
	P99US         float64 `json:"p99_us"`
	P999US        float64 `json:"p999_us"`
	MaxUS         float64 `json:"max_us"`
	MeanUS        float64 `json:"mean_us"`
}

const wrkJSONPrefix = "BENCH_JSON "

// ParseWrk reads wrk's standard output: the script's JSON line for the
// figures, cross-checked against wrk's own text (Requests/sec and, with
// --latency, the 50% and 99% lines). A run whose text and JSON disagree
// by more than rounding is reported as an error rather than published.
func ParseWrk(out string) (WrkResult, error) {
	text, err := parseWrkText(out)
	if err != nil {
		return WrkResult{}, err
	}
	var line string
	sc := bufio.NewScanner(strings.NewReader(out))
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		if s, ok := strings.CutPrefix(strings.TrimSpace(sc.Text()), wrkJSONPrefix); ok {
			line = s
		}
	}
	if line == "" {
		return WrkResult{}, errors.New("wrk output has no BENCH_JSON line: was the benchmark's Lua script (-s) used?")
	}
	r, err := parseBenchJSON(line)
	if err != nil {
		return WrkResult{}, err
	}
	if text.rps > 0 && !near(r.RPS, text.rps, 0.01) {
		return WrkResult{}, fmt.Errorf("wrk: Requests/sec %.2f in the text but %.2f from the JSON line: the output is inconsistent", text.rps, r.RPS)
	}
	if text.p50 > 0 && !near(float64(r.P50), float64(text.p50), 0.02) {
		return WrkResult{}, fmt.Errorf("wrk: 50%% latency %s in the text but %s from the JSON line", text.p50, r.P50)
	}
	if text.non2xx != r.StatusErrors {
		return WrkResult{}, fmt.Errorf("wrk: %d non-2xx/3xx responses in the text but %d status errors from the JSON line", text.non2xx, r.StatusErrors)
	}
	return r, nil
}

// ParseLoad reads the output of internal/tokenload: its one BENCH_JSON
// line, in the format of wrk's script.
func ParseLoad(out string) (WrkResult, error) {
	var line string
	for _, l := range strings.Split(out, "\n") {
		if s, ok := strings.CutPrefix(strings.TrimSpace(l), wrkJSONPrefix); ok {
			line = s
		}
	}
	if line == "" {
		return WrkResult{}, fmt.Errorf("tokenload printed no BENCH_JSON line: %.300q", out)
	}
	return parseBenchJSON(line)
}

func parseBenchJSON(line string) (WrkResult, error) {
	var j wrkJSON
	if err := json.Unmarshal([]byte(line), &j); err != nil {
		return WrkResult{}, fmt.Errorf("BENCH_JSON line %q: %w", line, err)
	}
	if j.DurationUS <= 0 {
		return WrkResult{}, fmt.Errorf("BENCH_JSON line %q: duration_us is %v, want > 0", line, j.DurationUS)
	}
	us := func(v float64) time.Duration { return time.Duration(math.Round(v * float64(time.Microsecond))) }
	r := WrkResult{
		Requests:     int64(j.Requests),
		Duration:     us(j.DurationUS),
		RPS:          j.Requests / (j.DurationUS / 1e6),
		P50:          us(j.P50US),
		P90:          us(j.P90US),
		P99:          us(j.P99US),
		P999:         us(j.P999US),
		Max:          us(j.MaxUS),
		Mean:         us(j.MeanUS),
		SocketErrors: int64(j.ConnectErrors + j.ReadErrors + j.WriteErrors + j.Timeouts),
		StatusErrors: int64(j.StatusErrors),
		Non2xx:       int64(j.Non2xx),
	}
	return r, nil
}

// near reports whether a and b differ by at most frac of the larger
// (wrk's text rounds to two decimals and three significant digits).
func near(a, b, frac float64) bool {
	d := a - b
	if d < 0 {
		d = -d
	}
	m := max(a, b)
	return d <= frac*m+0.01
}

// wrkText is what parseWrkText finds in wrk's human-readable output.
type wrkText struct {
	rps      float64
	p50, p99 time.Duration
	non2xx   int64
	requests int64
}

// parseWrkText reads wrk 4's text: "Requests/sec:", the --latency
// distribution ("50%    1.23ms"), the "N requests in Xs" line and the
// optional "Non-2xx or 3xx responses: N" line.
func parseWrkText(out string) (wrkText, error) {
	var t wrkText
	var haveRPS bool
	for _, raw := range strings.Split(out, "\n") {
		line := strings.TrimSpace(raw)
		f := strings.Fields(line)
		switch {
		case strings.HasPrefix(line, "Requests/sec:") && len(f) == 2:
			v, err := strconv.ParseFloat(f[1], 64)
			if err != nil {
				return t, fmt.Errorf("wrk: %q: %w", line, err)
			}
			t.rps, haveRPS = v, true
		case strings.HasPrefix(line, "Non-2xx or 3xx responses:") && len(f) == 5:
			v, err := strconv.ParseInt(f[4], 10, 64)
			if err != nil {
				return t, fmt.Errorf("wrk: %q: %w", line, err)
			}
			t.non2xx = v
		case len(f) == 2 && (f[0] == "50%" || f[0] == "99%"):
			d, err := ParseWrkDuration(f[1])
			if err != nil {
				return t, fmt.Errorf("wrk: %q: %w", line, err)
			}
			if f[0] == "50%" {
				t.p50 = d
			} else {
				t.p99 = d
			}
		case len(f) >= 4 && f[1] == "requests" && f[2] == "in":
			v, err := strconv.ParseInt(f[0], 10, 64)
			if err == nil {
				t.requests = v
			}
		}
	}
	if !haveRPS {
		return t, fmt.Errorf("wrk output has no Requests/sec line (did wrk run? output: %.300q)", out)
	}
	return t, nil
}

// ParseWrkDuration reads a wrk duration: a number with the unit us, ms, s,
// m or h ("812.00us", "1.23ms", "2.01s").
func ParseWrkDuration(s string) (time.Duration, error) {
	units := []struct {
		suffix string
		unit   time.Duration
	}{{"us", time.Microsecond}, {"ms", time.Millisecond}, {"s", time.Second}, {"m", time.Minute}, {"h", time.Hour}}
	for _, u := range units {
		if num, ok := strings.CutSuffix(s, u.suffix); ok {
			v, err := strconv.ParseFloat(num, 64)
			if err != nil || v < 0 {
				return 0, fmt.Errorf("wrk duration %q: want a number and a unit (us, ms, s, m, h)", s)
			}
			return time.Duration(math.Round(v * float64(u.unit))), nil
		}
	}
	return 0, fmt.Errorf("wrk duration %q: want a number and a unit (us, ms, s, m, h)", s)
}
