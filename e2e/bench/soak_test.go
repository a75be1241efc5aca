package bench

import (
	"fmt"
	"io"
	"net/http"
	"os"
	"slices"
	"sync"
	"sync/atomic"
	"time"
)

// soakResult is one gateway's soak: a steady rate for a long run, and its
// memory along the way.
type soakResult struct {
	Name             string
	Rate             int
	Duration         time.Duration
	Requests, Errors int64
	FirstErr         string
	P50, P99         time.Duration
	CPU              time.Duration
	// RSSIdle is before the load; RSSWarm after the warm-up (a tenth of
	// the run, at most 30 s); RSSEnd at the end; RSSPeak the VmHWM of the
	// run.
	RSSIdle, RSSWarm, RSSEnd, RSSPeak int64
}

// soakWorkers is the goroutines per gateway that send the soak's
// requests: enough that a slow answer does not hold up the rate.
const soakWorkers = 16

// soak loads the gateways side by side, each at rate requests per second
// for dur (an open loop: a ticker hands out the requests, workers send
// them; wrk cannot hold a rate), with a browser's cookie jar (a
// Set-Cookie answer replaces the cookie, as when the gateway slides the
// session or, on the cookie store, refreshes its tokens every access
// token lifetime), and samples each gateway's resident memory.
func (r *runner) soak(tgs []target, rate int, dur time.Duration) []soakResult {
	t := r.t
	out := make([]soakResult, len(tgs))
	warmAt := min(dur/10, 30*time.Second)
	var wg sync.WaitGroup
	for i, tg := range tgs {
		pid := tg.pids[0]
		res := &out[i]
		res.Name, res.Rate = tg.name, rate
		res.RSSIdle = rss(pid)
		_ = ResetPeakRSS(pid)
		cpu0 := must(ProcCPU(pid))(t)
		wg.Add(1)
		go func() {
			defer wg.Done()
			start := time.Now()
			var lat []time.Duration
			var mu sync.Mutex
			var errs atomic.Int64
			var firstErr atomic.Value
			cookie := tg.cookies[0]
			tickets := make(chan struct{}, rate) // at most a second behind
			done := make(chan struct{})
			var workers sync.WaitGroup
			client := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{MaxIdleConnsPerHost: soakWorkers},
				CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
			for range soakWorkers {
				workers.Add(1)
				go func() {
					defer workers.Done()
					for range tickets {
						mu.Lock()
						c := cookie
						mu.Unlock()
						t0 := time.Now()
						set, err := soakRequest(client, tg.urls[0], c)
						d := time.Since(t0)
						mu.Lock()
						if err != nil {
							errs.Add(1)
							firstErr.CompareAndSwap(nil, err.Error())
						} else {
							lat = append(lat, d)
							if len(set) > 0 {
								if next, err := mergeCookies(cookie, set); err == nil {
									cookie = next
								}
							}
						}
						mu.Unlock()
					}
				}()
			}
			// The ticker: every 10 ms the requests due since the start.
			tickerDone := make(chan struct{})
			go func() {
				defer close(tickerDone)
				tick := time.NewTicker(10 * time.Millisecond)
				defer tick.Stop()
				var sent int64
				for {
					select {
					case now := <-tick.C:
						due := int64(now.Sub(start).Seconds() * float64(rate))
						for ; sent < due; sent++ {
							select {
							case tickets <- struct{}{}:
							default: // more than a second behind: dropped, counted below
								errs.Add(1)
								firstErr.CompareAndSwap(nil, "the workers fell more than a second behind the rate")
							}
						}
					case <-done:
						return
					}
				}
			}()
			warm := time.NewTimer(warmAt)
			sample := time.NewTicker(5 * time.Second)
			end := time.NewTimer(dur)
		loop:
			for {
				select {
				case <-warm.C:
					res.RSSWarm = rss(pid)
				case <-sample.C:
					if i == 0 {
						r.trimLogs() // the access logs of all of them
					}
					if _, err := os.Stat(fmt.Sprintf("/proc/%d", pid)); err != nil {
						errs.Add(1)
						firstErr.CompareAndSwap(nil, "the gateway process is gone")
						break loop
					}
				case <-end.C:
					break loop
				}
			}
			sample.Stop()
			close(done)
			<-tickerDone
			close(tickets)
			workers.Wait()
			res.RSSEnd = rss(pid)
			res.RSSPeak, _ = ProcPeakRSS(pid)
			res.CPU = must(ProcCPU(pid))(t) - cpu0
			res.Duration = time.Since(start)
			slices.Sort(lat)
			res.Requests = int64(len(lat)) + errs.Load()
			res.Errors = errs.Load()
			if e, ok := firstErr.Load().(string); ok {
				res.FirstErr = e
			}
			if len(lat) > 0 {
				res.P50 = lat[len(lat)/2]
				res.P99 = lat[min(len(lat)-1, len(lat)*99/100)]
			}
		}()
	}
	wg.Wait()
	for _, s := range out {
		t.Logf("soak %s: %d requests in %s at %d/s, %d errors %s; RSS idle %.1f MB, after warm-up %.1f MB, end %.1f MB, peak %.1f MB",
			s.Name, s.Requests, s.Duration.Round(time.Second), s.Rate, s.Errors, s.FirstErr,
			float64(s.RSSIdle)/(1<<20), float64(s.RSSWarm)/(1<<20), float64(s.RSSEnd)/(1<<20), float64(s.RSSPeak)/(1<<20))
		if s.Errors > 0 {
			t.Errorf("soak %s: %d of %d requests failed; first: %s", s.Name, s.Errors, s.Requests, s.FirstErr)
		}
	}
	return out
}

// soakRequest is one API call as the SPA makes it; it returns the
// cookies the answer set.
func soakRequest(c *http.Client, u, cookie string) ([]*http.Cookie, error) {
	req, err := http.NewRequest(http.MethodGet, u, nil)
	if err != nil {
		return nil, err
	}
	req.Header.Set("Cookie", cookie)
	req.Header.Set("X-CSRF", "1")
	req.Header.Set("Accept", "application/json")
	resp, err := c.Do(req)
	if err != nil {
		return nil, err
	}
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 1<<20))
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("GET %s answered %d, want 200 from the upstream", u, resp.StatusCode)
	}
	return resp.Cookies(), nil
}

// rss is process pid's resident set now (VmRSS), 0 when unreadable.
func rss(pid int) int64 {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0
	}
	v, _ := ParseProcStatusKB(string(b), "VmRSS")
	return v
}
