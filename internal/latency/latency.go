// Package latency reports per-iteration latencies of a benchmark as percentiles
// (b.ReportMetric "p50-ms" and "p99-ms"), the form BENCHMARKS.md records.
package latency

import (
	"slices"
	"testing"
	"time"
)

// Report sorts lat and reports its p50 and p99 in milliseconds. Nothing is
// reported for an empty slice.
func Report(b *testing.B, lat []time.Duration) {
	b.Helper()
	if len(lat) == 0 {
		return
	}
	slices.Sort(lat)
	at := func(q float64) float64 {
		return float64(lat[int(q*float64(len(lat)-1))]) / float64(time.Millisecond)
	}
	b.ReportMetric(at(0.50), "p50-ms")
	b.ReportMetric(at(0.99), "p99-ms")
}

// ReportPair reports the p50 and p99 of two paths measured in the same
// iterations (regkit's and the native client's, interleaved), in milliseconds,
// and the ratios regkit/native of each, as "regkit-p50-ms", "native-p50-ms",
// "ratio-p50" and the same for p99; and sets ns/op to 0.
func ReportPair(b *testing.B, regkit, native []time.Duration) {
	b.Helper()
	if len(regkit) == 0 || len(native) == 0 {
		return
	}
	slices.Sort(regkit)
	slices.Sort(native)
	at := func(lat []time.Duration, q float64) float64 {
		return float64(lat[int(q*float64(len(lat)-1))]) / float64(time.Millisecond)
	}
	b.ReportMetric(0, "ns/op")
	for _, q := range []struct {
		name string
		q    float64
	}{{"p50", 0.50}, {"p99", 0.99}} {
		r, n := at(regkit, q.q), at(native, q.q)
		b.ReportMetric(r, "regkit-"+q.name+"-ms")
		b.ReportMetric(n, "native-"+q.name+"-ms")
		b.ReportMetric(r/n, "ratio-"+q.name)
	}
}
