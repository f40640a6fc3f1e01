package nacos_test

import (
	"context"
	"fmt"
	"math/rand/v2"
	"net/http"
	"net/url"
	"strconv"
	"testing"
	"time"

	"github.com/regkit/regkit/internal/testenv"
	"github.com/regkit/regkit/nacos"
	"github.com/regkit/regkit/nacos/nacostest"
	"github.com/regkit/regkit/registry"
)

// Write -> listener notified latency of configurations: through this package
// (Config.Listen, and the store's tree watch through registry.Store.Watch) and
// through a raw HTTP long poll on /v1/cs/configs/listener, on the same server in the
// same run. Every iteration is one sample of the p50/p99 reported.

// armPause lets a listener that was just started reach the server, outside the
// timer (a fixed warm-up, not a wait for a condition).
func armPause(b *testing.B) {
	b.StopTimer()
	time.Sleep(20*time.Millisecond + rand.N(20*time.Millisecond))
	b.StartTimer()
}

func benchConfigListen(b *testing.B, addr string, raw bool) {
	ctx := context.Background()
	ns := fmt.Sprintf("cbench%d", time.Now().UnixNano()%1e9)
	f, err := nacos.OpenConfig(ctx, "nacos://"+addr+"?namespace="+ns+"&store=false")
	if err != nil {
		b.Fatal(err)
	}
	defer f.Close()
	tr := &http.Transport{}
	defer tr.CloseIdleConnections()
	hc := &http.Client{Transport: tr}
	const id = "bench.cfg"
	content := "v0"
	if err := f.Publish(ctx, id, content, ""); err != nil {
		b.Fatal(err)
	}
	testenv.Eventually(b, 30*time.Second, "first content readable", func() error {
		got, _, err := f.Get(ctx, id)
		if err != nil || got != content {
			return fmt.Errorf("Get = %q, %v", got, err)
		}
		return nil
	})
	var lat []time.Duration
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		md5 := nacos.MD5(content)
		done := make(chan error, 1)
		go func() {
			if raw {
				lc := id + "\x02" + nacos.DefaultGroup + "\x02" + md5 + "\x02" + ns + "\x01"
				req, err := http.NewRequest(http.MethodPost, "http://"+addr+"/nacos/v1/cs/configs/listener",
					stringsReader(url.Values{"Listening-Configs": {lc}}.Encode()))
				if err != nil {
					done <- err
					return
				}
				req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
				req.Header.Set("Long-Pulling-Timeout", "30000")
				resp, err := hc.Do(req)
				if err == nil {
					resp.Body.Close()
				}
				done <- err
				return
			}
			_, err := f.Listen(ctx, map[string]string{id: md5}, 30*time.Second)
			done <- err
		}()
		armPause(b)
		content = "v" + strconv.Itoa(i+1)
		start := time.Now()
		if err := f.Publish(ctx, id, content, ""); err != nil {
			b.Fatal(err)
		}
		if err := <-done; err != nil {
			b.Fatal(err)
		}
		lat = append(lat, time.Since(start))
	}
	b.StopTimer()
	percentiles(b, lat)
}

func BenchmarkConfigNotifyPolaris(b *testing.B) {
	srv := testenv.StartPolaris(b)
	b.Run("regkit", func(b *testing.B) { benchConfigListen(b, srv.NacosAddr(), false) })
	b.Run("raw", func(b *testing.B) { benchConfigListen(b, srv.NacosAddr(), true) })
}

func BenchmarkConfigNotifyTestServer(b *testing.B) {
	srv := nacostest.Start(b)
	b.Run("regkit", func(b *testing.B) { benchConfigListen(b, srv.Addr(), false) })
	b.Run("raw", func(b *testing.B) { benchConfigListen(b, srv.Addr(), true) })
}

// BenchmarkStoreNotifyTestServer: Store.Set -> registry.TreeWatcher sees the new
// value (long poll cut every poll_interval, then re-list and diff in package
// registry), on the test server (Polaris offers no store).
func BenchmarkStoreNotifyTestServer(b *testing.B) {
	srv := nacostest.Start(b)
	ctx := context.Background()
	ns := fmt.Sprintf("sbench%d", time.Now().UnixNano()%1e9)
	c := openURL(b, "nacos://"+srv.Addr()+"?namespace="+ns+"&poll_interval="+benchPoll.String())
	defer c.Close()
	st := c.Store()
	if _, err := st.Create(ctx, "/bench/k", []byte("v0")); err != nil {
		b.Fatal(err)
	}
	w, err := st.Watch(ctx, "/bench")
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
		v := "v" + strconv.Itoa(i+1)
		start := time.Now()
		if _, err := st.Set(ctx, "/bench/k", []byte(v), registry.AnyVersion); err != nil {
			b.Fatal(err)
		}
		wctx, cancel := context.WithTimeout(ctx, 30*time.Second)
		for seen := false; !seen; {
			tc, err := w.Next(wctx)
			if err != nil {
				b.Fatalf("%s never seen: %v", v, err)
			}
			for _, n := range tc.Nodes {
				seen = seen || (n.Key == "/bench/k" && string(n.Value) == v)
			}
		}
		cancel()
		lat = append(lat, time.Since(start))
	}
	b.StopTimer()
	percentiles(b, lat)
}
