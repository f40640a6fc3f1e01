package nacos_test

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/regkit/regkit/internal/latency"
	"github.com/regkit/regkit/internal/testenv"
	"github.com/regkit/regkit/nacos"
	"github.com/regkit/regkit/nacos/nacostest"
	"github.com/regkit/regkit/registry"
)

// Register -> watcher notified latency, through registry.Client.Watch and through a
// raw HTTP client (register POST, then GET /instance/list every poll period until
// the instance shows up: what a hand-written Nacos client does), on the same server
// in the same run, at the same poll period. Run with -benchtime=Nx: every iteration
// is one sample of the p50/p99 reported.

const benchPoll = 200 * time.Millisecond

// percentiles reports the p50 and p99 of the samples; they are the result, not
// the loop time.
func percentiles(b *testing.B, d []time.Duration) {
	latency.Report(b, d)
	b.ReportMetric(0, "ns/op")
}

func benchRegkit(b *testing.B, addr string) {
	ctx := context.Background()
	ns := fmt.Sprintf("bench%d", time.Now().UnixNano()%1e9)
	c := openURL(b, "nacos://"+addr+"?namespace="+ns+"&poll_interval="+benchPoll.String())
	defer c.Close()
	w, err := c.Watch(ctx, "bench")
	if err != nil {
		b.Fatal(err)
	}
	defer w.Close()
	if _, err := w.Next(ctx); err != nil {
		b.Fatal(err)
	}
	var lat []time.Duration
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		pause(b)
		id := fmt.Sprintf("b%d", i)
		start := time.Now()
		r, err := c.Register(ctx, registry.Instance{Service: "bench", ID: id, Host: "127.0.0.1", Port: 20000 + i%1000})
		if err != nil {
			b.Fatal(err)
		}
		wctx, cancel := context.WithTimeout(ctx, 30*time.Second)
		for {
			s, err := w.Next(wctx)
			if err != nil {
				b.Fatalf("%s never seen: %v", id, err)
			}
			if slices.ContainsFunc(s.Instances, func(in registry.Instance) bool { return in.ID == id }) {
				break
			}
		}
		cancel()
		lat = append(lat, time.Since(start))
		b.StopTimer()
		if err := r.Deregister(ctx); err != nil {
			b.Fatal(err)
		}
		b.StartTimer()
	}
	b.StopTimer()
	percentiles(b, lat)
}

func rawCall(b *testing.B, hc *http.Client, method, u string, form url.Values) []byte {
	out, err := rawDo(hc, method, u, form)
	if err != nil {
		b.Fatal(err)
	}
	return out
}

func rawDo(hc *http.Client, method, u string, form url.Values) ([]byte, error) {
	var body io.Reader
	if method == http.MethodPost {
		body = strings.NewReader(form.Encode())
	} else {
		u += "?" + form.Encode()
	}
	req, err := http.NewRequest(method, u, body)
	if err != nil {
		return nil, err
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	}
	resp, err := hc.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	out, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("%s %s: %d %s", method, u, resp.StatusCode, out)
	}
	return out, nil
}

// pause waits a random part of the poll period outside the timer, so that
// registrations do not fall at the same phase of the poll every time.
func pause(b *testing.B) {
	b.StopTimer()
	time.Sleep(rand.N(benchPoll)) // phase randomisation, not a wait for a condition
	b.StartTimer()
}

func benchRaw(b *testing.B, addr string) {
	tr := &http.Transport{}
	defer tr.CloseIdleConnections()
	hc := &http.Client{Transport: tr, Timeout: 5 * time.Second}
	ns := fmt.Sprintf("braw%d", time.Now().UnixNano()%1e9)
	base := "http://" + addr + "/nacos/v1/ns/instance"
	svc := nacos.DefaultGroup + "@@bench"
	// The raw watcher: a poller on its own ticker, publishing the listed ports.
	lists := make(chan map[int]bool, 1)
	stop := make(chan struct{})
	done := make(chan struct{})
	go func() {
		defer close(done)
		tick := time.NewTicker(benchPoll)
		defer tick.Stop()
		for {
			var l struct {
				Hosts []struct {
					Port int `json:"port"`
				} `json:"hosts"`
			}
			body, err := rawDo(hc, http.MethodGet, base+"/list", url.Values{"namespaceId": {ns}, "serviceName": {svc}})
			if err == nil {
				_ = json.Unmarshal(body, &l)
			}
			ports := map[int]bool{}
			for _, h := range l.Hosts {
				ports[h.Port] = true
			}
			select {
			case <-lists:
			default:
			}
			lists <- ports
			select {
			case <-stop:
				return
			case <-tick.C:
			}
		}
	}()
	defer func() { close(stop); <-done }()
	var lat []time.Duration
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		pause(b)
		port := 20000 + i%1000
		form := url.Values{"namespaceId": {ns}, "serviceName": {svc}, "ip": {"127.0.0.1"}, "port": {fmt.Sprint(port)},
			"metadata": {"{}"}, "ephemeral": {"false"}}
		start := time.Now()
		rawCall(b, hc, http.MethodPost, base, form)
		timeout := time.After(30 * time.Second)
		for seen := false; !seen; {
			select {
			case ports := <-lists:
				seen = ports[port]
			case <-timeout:
				b.Fatalf("port %d never listed", port)
			}
		}
		lat = append(lat, time.Since(start))
		b.StopTimer()
		rawCall(b, hc, http.MethodDelete, base, url.Values{"namespaceId": {ns}, "serviceName": {svc}, "ip": {"127.0.0.1"},
			"port": {fmt.Sprint(port)}, "ephemeral": {"false"}})
		b.StartTimer()
	}
	b.StopTimer()
	percentiles(b, lat)
}

func BenchmarkNotifyPolaris(b *testing.B) {
	pl := testenv.StartPolaris(b)
	b.Run("regkit", func(b *testing.B) { benchRegkit(b, pl.NacosAddr()) })
	b.Run("raw", func(b *testing.B) { benchRaw(b, pl.NacosAddr()) })
}

func BenchmarkNotifyTestServer(b *testing.B) {
	srv := nacostest.Start(b, nacostest.WithCacheMillis(0))
	b.Run("regkit", func(b *testing.B) { benchRegkit(b, srv.Addr()) })
	b.Run("raw", func(b *testing.B) { benchRaw(b, srv.Addr()) })
}
