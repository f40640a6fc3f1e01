import re,sys,statistics,collections
rounds=[];cur={}
for line in open(sys.argv[1]):
    m=re.match(r'BenchmarkPick/(\w+)/(\S+)-\d+\s+\d+\s+([\d.]+) ns/op',line)
    if not m: 
        if line.startswith('PASS') and cur: rounds.append(cur); cur={}
        continue
    cur[(m.group(1),m.group(2))]=float(m.group(3))
if cur: rounds.append(cur)
print(len(rounds),"rounds")
for mode in ("serial","parallel"):
    for name in sorted({k[1] for r in rounds for k in r if k[0]==mode}):
        vals=[r[(mode,name)] for r in rounds if (mode,name) in r]
        rg=[r[(mode,name)]/r[(mode,"grpc_round_robin")] for r in rounds if (mode,name) in r]
        rk=[r[(mode,name)]/r[(mode,"gokit_round_robin")] for r in rounds if (mode,name) in r]
        print(f"{mode:8} {name:32} med {statistics.median(vals):6.2f} ns  vs grpc {statistics.median(rg):.2f}x  vs gokit {statistics.median(rk):.2f}x")
