#!/usr/bin/env python3
"""benchsummary.py OUT BENCHMARKS.md: summarises scripts/bench.sh's rounds into the
figures table of BENCHMARKS.md (between the figures markers).

Each OUT/<name>.txt holds one line per round and benchmark. A figure is the
median over the rounds; a ratio is the median of the per-round ratios (regkit
and native measured in the same round, or the same iteration)."""
import re
import statistics
import sys
from pathlib import Path

out, md = Path(sys.argv[1]), Path(sys.argv[2])
LINE = re.compile(r"^(Benchmark\S+?)(?:-\d+)?\s+\d+\s+(.*)$")


def load(name):
    """{benchmark name: [ {unit: value} per round ]}"""
    res = {}
    p = out / f"{name}.txt"
    if not p.exists():
        return res
    for line in p.read_text().splitlines():
        m = LINE.match(line)
        if not m:
            continue
        vals = m.group(2).split()
        metrics = {vals[i + 1]: float(vals[i]) for i in range(0, len(vals) - 1, 2)}
        res.setdefault(m.group(1), []).append(metrics)
    return res


def med(xs):
    xs = [x for x in xs if x is not None]
    return statistics.median(xs) if xs else None


def fmt(v, unit=""):
    if v is None:
        return "—"
    if abs(v) >= 100:
        s = f"{v:,.0f}"
    elif abs(v) >= 10:
        s = f"{v:.1f}"
    else:
        s = f"{v:.3g}"
    return s + unit


rows = []


def paired(name, bench, sub_r, sub_n, metric, label, goal, unit=" ms"):
    """Two sub-benchmarks run back to back in each round."""
    d = load(name)
    r, n = d.get(f"{bench}/{sub_r}", []), d.get(f"{bench}/{sub_n}", [])
    if not r or not n:
        return
    rv = [x.get(metric) for x in r]
    nv = [x.get(metric) for x in n]
    ratios = [a / b for a, b in zip(rv, nv) if a and b]
    rows.append((label, fmt(med(rv), unit), fmt(med(nv), unit), fmt(med(ratios), "×"), goal))


def inline(name, bench, rm, nm, ratio, label, goal, unit=" ms"):
    """regkit and native measured in the same iterations, ratio reported."""
    d = load(name).get(bench, [])
    if not d:
        return
    rows.append((label, fmt(med([x.get(rm) for x in d]), unit), fmt(med([x.get(nm) for x in d]), unit),
                 fmt(med([x.get(ratio) for x in d]), "×"), goal))


def single(name, bench, metric, label, goal, unit="", native="—"):
    d = load(name).get(bench, [])
    if not d:
        return
    rows.append((label, fmt(med([x.get(metric) for x in d]), unit), native, "—", goal))


inline("etcd-notify", "BenchmarkRegisterToWatch", "regkit-p50-ms", "native-p50-ms", "ratio-p50",
       "etcd register → watcher notified, p50", "≤ 1.2×")
inline("etcd-notify", "BenchmarkRegisterToWatch", "regkit-p99-ms", "native-p99-ms", "ratio-p99",
       "etcd register → watcher notified, p99", "≤ 1.2×")
inline("zk-notify", "BenchmarkRegisterToWatch", "regkit-p50-ms", "native-p50-ms", "ratio-p50",
       "ZooKeeper register → watcher notified, p50 (native: create → child event, ChildrenW, GetW)", "≤ 1.2×")
inline("zk-notify", "BenchmarkRegisterToWatch", "regkit-p99-ms", "native-p99-ms", "ratio-p99",
       "ZooKeeper, p99", "≤ 1.2×")
inline("consul-notify", "BenchmarkRegisterToNotified", "regkit-p50-ms", "native-p50-ms", "ratio-p50",
       "Consul register → watcher notified, p50", "≤ 1.2×")
inline("consul-notify", "BenchmarkRegisterToNotified", "regkit-p99-ms", "native-p99-ms", "ratio-p99",
       "Consul, p99", "≤ 1.2×")
inline("zk-many", "BenchmarkRegisterMany", "regkit-s", "native-s", "ratio",
       "ZooKeeper, 1,000 instances of one service registered from one Client", "≤ 1.5×", " s")
inline("etcd-many", "BenchmarkRegisterMany", "regkit-s", "native-s", "ratio",
       "etcd, the same", "≤ 1.5×", " s")
single("cache-fleet", "BenchmarkFleet", "heap-MB",
       "10,000 services × 10 instances in `registry/cache` (mem): heap after GC, the server's data excluded",
       "≤ 50 MB", " MB")
single("cache-fleet", "BenchmarkFleet", "goroutines", "goroutines for those 10,000 services (mem, Client + Cache)",
       "O(1) per Client")
single("etcd-services", "BenchmarkServicesGoroutines", "goroutines",
       "goroutines for 10,000 watched services (etcd, Client only)", "O(1) per Client")
single("cache-fleet", "BenchmarkFleet", "sync-s", "cache initial sync of 10,000 services (mem)", "linear; ≤ 2 s", " s")
single("etcd-services", "BenchmarkServicesGoroutines", "sync-s", "first snapshot of 10,000 services (etcd)", "—", " s")
d = load("event-allocs").get("BenchmarkApplyEvent", [])
if d:
    rows.append(("allocations per watch event, 1,000-instance service (one instance changed)",
                 f"{fmt(med([x.get('allocs/op') for x in d]))} allocs / {fmt(med([x.get('B/op') for x in d]) / 1024)} KB",
                 "—", "—", "proportional to the change"))
inline("etcd-watchers", "BenchmarkWatchers1000", "regkit-p50-ms", "native-p50-ms", "ratio-p50",
       "1,000 watchers of one service on one Client (etcd), all notified, p50 (native: 1,000 `clientv3.Watch`)", "keep")
paired("nacos-polaris", "BenchmarkNotifyPolaris", "regkit", "raw", "p50-ms",
       "Nacos (Polaris), register → watcher notified, p50 (native: HTTP poller, same period)", "≤ 1.2×")
paired("nacos-test", "BenchmarkNotifyTestServer", "regkit", "raw", "p50-ms",
       "Nacos (nacostest), p50", "≤ 1.2×")
d = load("cache-lookup").get("BenchmarkLookup", [])
if d:
    rows.append(("`registry/cache` Lookup of a watched service",
                 f"{fmt(med([x.get('ns/op') for x in d]))} ns, {fmt(med([x.get('allocs/op') for x in d]))} allocs",
                 "—", "—", "≤ 50 ns, 0 allocs"))

# Issue 16: the recipes, in their own table.
fig_rows, rows = rows, []
for be, label in (("etcd", "etcd (native: `concurrency.Mutex`)"), ("consul", "Consul (native: `api.Lock`, session given)"),
                  ("zk", "ZooKeeper (native: the same recipe on plain go-zookeeper)")):
    inline(f"recipes-{be}-mutex", "BenchmarkMutexUncontended", "regkit-ops/s", "native-ops/s", "ratio",
           f"{label}: uncontended acquire+release", "≥ 1.0×", "/s")
    for w in (8, 64):
        inline(f"recipes-{be}-contended", f"BenchmarkMutexContended/waiters={w}", "regkit-ops/s", "native-ops/s",
               "ratio", f"{label.split(' (')[0]}: contended, {w} waiters, acquisitions", "—", "/s")
ttl = {"etcd": 3, "consul": 10, "zk": 4}
for be, name in (("etcd", "etcd"), ("consul", "Consul"), ("zk", "ZooKeeper")):
    for how, goal in (("resign", "≤ 50 ms"), ("close", "—")):
        for q in ("p50", "p99"):
            single(f"recipes-{be}-failover", f"BenchmarkFailover/after={how}", f"{q}-ms",
                   f"{name}: leader failover after {'Resign' if how == 'resign' else 'Client.Close without Resign'}, {q}",
                   goal if q == "p99" else "—", " ms")
    for q in ("p50", "p99"):
        single(f"recipes-{be}-expiry", "BenchmarkFailover/after=expiry", f"{q}-ms",
               f"{name}: leader failover after a session expiry (TTL {ttl[be]} s), {q}",
               f"≤ {ttl[be] + 1} s" if q == "p99" else "—", " ms")
recipe_rows, rows = rows, fig_rows

loads = []
lp = out / "load.txt"
if lp.exists():
    for line in lp.read_text().splitlines():
        m = re.search(r"load average: ([\d.]+)", line)
        if m:
            loads.append(float(m.group(1)))

def rounds(prefix):
    n = [len(v) for name in sorted(p.stem for p in out.glob(prefix + "*.txt")) for v in load(name).values()]
    return max(n, default=0) or "?"


def table(rows, begin, end, rounds):
    text = [begin, "",
            f"Median of {rounds} rounds; "
            f"1-minute load average before the rounds: "
            + (f"{min(loads):.2f}–{max(loads):.2f} (median {statistics.median(loads):.2f})" if loads else "not recorded")
            + " on 2 shared cores.", "",
            "| figure | regkit | native | ratio | goal |", "|---|---|---|---|---|"]
    text += [f"| {a} | {b} | {c} | {d} | {e} |" for a, b, c, d, e in rows]
    text += ["", end]
    return "\n".join(text)


doc = md.read_text()
for rows_, begin, end, pre in (
        (rows, "<!-- figures:begin (written by scripts/bench.sh; edit the script, not this table) -->",
         "<!-- figures:end -->", "etcd-notify"),
        (recipe_rows, "<!-- recipes:begin (written by scripts/bench.sh; edit the script, not this table) -->",
         "<!-- recipes:end -->", "recipes-")):
    if not rows_:
        continue  # not measured this time: keep the table as it is
    b = doc.find(begin.split(" (")[0])
    e = doc.find(end)
    if b < 0 or e < 0:
        sys.exit(f"BENCHMARKS.md has no {begin.split(' (')[0]} markers")
    doc = doc[:b] + table(rows_, begin, end, rounds(pre)) + doc[e + len(end):]
md.write_text(doc)
