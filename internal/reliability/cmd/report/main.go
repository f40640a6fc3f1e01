// Command report turns the JSON lines of reliability.Report into RELIABILITY.md
// (see scripts/reliability.sh).
package main

import (
	"bufio"
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"slices"
	"time"

	"github.com/regkit/regkit/internal/reliability"
)

func main() {
	runs := flag.Int("runs", 3, "runs per scenario (for the header)")
	status := flag.Int("status", 0, "exit status of the test runs")
	flag.Parse()
	type key struct{ backend, scenario string }
	var order []key
	groups := map[key][]reliability.Result{}
	sc := bufio.NewScanner(os.Stdin)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		var r reliability.Result
		if err := json.Unmarshal(sc.Bytes(), &r); err != nil {
			fmt.Fprintln(os.Stderr, "report:", err)
			os.Exit(1)
		}
		k := key{r.Backend, r.Scenario}
		if _, ok := groups[k]; !ok {
			order = append(order, k)
		}
		groups[k] = append(groups[k], r)
	}
	fmt.Print(reliability.Header(*runs, *status))
	fmt.Println("| backend | scenario | runs | registrations lost | views differing | cached lookups answered | stale-marked past the bound | first stale (median) | snapshot start | fresh again (median / max) | registrations back (median / max) | leaderless: conns / bytes / s | goroutines / sockets left |")
	fmt.Println("|---|---|---|---|---|---|---|---|---|---|---|---|---|")
	for _, k := range order {
		rs := groups[k]
		var lost, differ, lk, ans, req, marked, gl, sl int
		var conns, bytes int64
		var secs float64
		var fresh, back, first []time.Duration
		snap := ""
		for _, r := range rs {
			lost += r.Lost
			differ += r.ViewsDiffer
			lk += r.Lookups
			ans += r.Answered
			req += r.StaleRequired
			marked += r.StaleMarked
			gl += r.GoroutinesLeft
			sl += r.SocketsLeft
			conns += r.OutageConns
			bytes += r.OutageBytes
			secs += r.OutageSeconds
			fresh = append(fresh, r.FreshAfter)
			back = append(back, r.RegsBackAfter)
			if r.FirstStale >= 0 {
				first = append(first, r.FirstStale)
			}
			if r.SnapshotStart != "" && (snap == "" || snap == "ok") {
				snap = r.SnapshotStart
			}
		}
		if snap == "" {
			snap = "–"
		}
		lookups := fmt.Sprintf("%d/%d", ans, lk)
		if lk > 0 {
			lookups += fmt.Sprintf(" (%.0f%%)", 100*float64(ans)/float64(lk))
		}
		stale := "–"
		if req > 0 {
			stale = fmt.Sprintf("%d/%d", marked, req)
		}
		leaderless := "–"
		if secs > 0 {
			leaderless = fmt.Sprintf("%d / %d / %.0f", conns, bytes, secs)
		}
		if k.scenario == "client process kill -9" {
			fmt.Printf("| %s | %s | %d | – | – | – | – | – | – | – | registration gone after %s / %s | – | – |\n",
				k.backend, k.scenario, len(rs), med(back), maxd(back))
			continue
		}
		fmt.Printf("| %s | %s | %d | %d | %d | %s | %s | %s | %s | %s / %s | %s / %s | %s | %d / %d |\n",
			k.backend, k.scenario, len(rs), lost, differ, lookups, stale, med(first), snap,
			med(fresh), maxd(fresh), med(back), maxd(back), leaderless, gl, sl)
	}
	fmt.Print(reliability.Notes)
}

func med(ds []time.Duration) string {
	if len(ds) == 0 {
		return "–"
	}
	s := slices.Clone(ds)
	slices.Sort(s)
	return round(s[len(s)/2])
}

func maxd(ds []time.Duration) string {
	if len(ds) == 0 {
		return "–"
	}
	return round(slices.Max(ds))
}

func round(d time.Duration) string {
	if d < time.Second {
		return d.Round(time.Millisecond).String()
	}
	return d.Round(10 * time.Millisecond).String()
}
