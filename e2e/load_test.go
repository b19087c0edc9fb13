package e2e

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net/http"
	"sort"
	"sync"
	"sync/atomic"
	"time"
)

// loadOptions shape a bounded load of chat requests through the trusted
// app key, spread over ten users, every tenth one streamed.
type loadOptions struct {
	// url is the sluice API listener.
	url string
	// n is the number of requests; the load stops earlier when ctx ends.
	n int
	// conc is the number of concurrent clients.
	conc int
	// rate caps requests per second (0: as fast as answered).
	rate int
	// tag starts every prompt, so runs do not mix.
	tag string
}

// loadResult is what the clients saw.
type loadResult struct {
	mu sync.Mutex
	// ids maps the X-Request-Id each answer carried to its status.
	ids map[string]int
	// failed counts requests without an HTTP answer (connection refused or
	// cut, as while sluice shuts down).
	failed atomic.Int64
	// latencies of answered requests, in completion order.
	latencies []time.Duration
}

func (r *loadResult) statusCount(status int) int {
	r.mu.Lock()
	defer r.mu.Unlock()
	n := 0
	for _, s := range r.ids {
		if s == status {
			n++
		}
	}
	return n
}

// percentile returns the p-th percentile (0..1) of the latencies.
func (r *loadResult) percentile(p float64) time.Duration {
	r.mu.Lock()
	l := append([]time.Duration(nil), r.latencies...)
	r.mu.Unlock()
	if len(l) == 0 {
		return 0
	}
	sort.Slice(l, func(i, j int) bool { return l[i] < l[j] })
	return l[min(int(p*float64(len(l))), len(l)-1)]
}

// runLoad sends the load and returns when every request is answered (or
// failed) or ctx ends.
func runLoad(ctx context.Context, o loadOptions) *loadResult {
	res := &loadResult{ids: make(map[string]int, o.n)}
	tr := &http.Transport{MaxIdleConnsPerHost: o.conc, MaxConnsPerHost: o.conc, IdleConnTimeout: time.Minute}
	defer tr.CloseIdleConnections()
	client := &http.Client{Transport: tr, Timeout: 30 * time.Second}
	next := make(chan int)
	go func() {
		defer close(next)
		var tick *time.Ticker
		if o.rate > 0 {
			tick = time.NewTicker(time.Second / time.Duration(o.rate))
			defer tick.Stop()
		}
		for i := 0; i < o.n; i++ {
			if tick != nil {
				select {
				case <-tick.C:
				case <-ctx.Done():
					return
				}
			}
			select {
			case next <- i:
			case <-ctx.Done():
				return
			}
		}
	}()
	var wg sync.WaitGroup
	for range o.conc {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range next {
				stream := i%10 == 9
				body := fmt.Sprintf(`{"model":"gpt-4o-mini","stream":%t,"messages":[{"role":"user","content":"%s %d"}]}`, stream, o.tag, i)
				req, _ := http.NewRequestWithContext(ctx, http.MethodPost, o.url+"/v1/chat/completions", bytes.NewBufferString(body))
				req.Header.Set("Authorization", "Bearer "+appKey)
				req.Header.Set("Content-Type", "application/json")
				req.Header.Set("X-Sluice-User", fmt.Sprintf("load-%d", i%10))
				start := time.Now()
				resp, err := client.Do(req)
				if err != nil {
					res.failed.Add(1)
					continue
				}
				_, err = io.Copy(io.Discard, resp.Body)
				_ = resp.Body.Close()
				if err != nil {
					res.failed.Add(1)
					continue
				}
				d := time.Since(start)
				res.mu.Lock()
				res.ids[resp.Header.Get("X-Request-Id")] = resp.StatusCode
				res.latencies = append(res.latencies, d)
				res.mu.Unlock()
			}
		}()
	}
	wg.Wait()
	return res
}
