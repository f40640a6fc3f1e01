package reliability

import (
	"bufio"
	"fmt"
	"net"
	"os"
	"runtime"
	"strconv"
	"strings"
)

// clientFrames mark a goroutine as the client's: regkit's own code (not the
// tests' servers and proxies), the backends' client libraries and gRPC's client
// side. A goroutine in the etcd server (embedded in the etcd tests) is not.
var clientFrames = []string{
	"github.com/regkit/regkit/registry", "github.com/regkit/regkit/etcd.", "github.com/regkit/regkit/zk.",
	"github.com/regkit/regkit/consul.", "github.com/regkit/regkit/nacos.", "github.com/regkit/regkit/internal/owned",
	"github.com/regkit/regkit/internal/inflight",
	"github.com/go-zookeeper/zk", "go.etcd.io/etcd/client/v3", "github.com/hashicorp/consul/api",
	"grpc/internal/transport.(*http2Client)", "grpc.(*addrConn)", "grpc.(*ClientConn)", "grpc.(*ccBalancerWrapper)",
	"grpc.(*ccResolverWrapper)",
}

// clientGoroutines counts the goroutines whose stacks hold a client frame.
func clientGoroutines() int {
	buf := make([]byte, 1<<20)
	for {
		n := runtime.Stack(buf, true)
		if n < len(buf) {
			buf = buf[:n]
			break
		}
		buf = make([]byte, 2*len(buf))
	}
	count := 0
	for _, g := range strings.Split(string(buf), "\n\n") {
		if strings.Contains(g, "go.etcd.io/etcd/server") || strings.Contains(g, "internal/reliability.") {
			continue
		}
		for _, f := range clientFrames {
			if strings.Contains(g, f) {
				count++
				break
			}
		}
	}
	return count
}

// proxyPorts are the ports of the members' client proxies.
func proxyPorts(tg *Target) map[int]bool {
	ports := map[int]bool{}
	for _, cp := range clientProxies(tg) {
		_, p, _ := net.SplitHostPort(cp.Addr())
		n, _ := strconv.Atoi(p)
		ports[n] = true
	}
	return ports
}

// clientSockets counts this process's TCP sockets connected to one of ports, on
// the dialing side (Linux: /proc/net/tcp against /proc/self/fd; 0 elsewhere).
func clientSockets(ports map[int]bool) int {
	inodes := map[string]bool{}
	ents, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		return 0
	}
	for _, e := range ents {
		l, err := os.Readlink("/proc/self/fd/" + e.Name())
		if err == nil && strings.HasPrefix(l, "socket:[") {
			inodes[strings.TrimSuffix(strings.TrimPrefix(l, "socket:["), "]")] = true
		}
	}
	count := 0
	for _, file := range []string{"/proc/self/net/tcp", "/proc/self/net/tcp6"} {
		f, err := os.Open(file)
		if err != nil {
			continue
		}
		sc := bufio.NewScanner(f)
		for sc.Scan() {
			fs := strings.Fields(sc.Text())
			if len(fs) < 10 || fs[0] == "sl" {
				continue
			}
			_, rport, ok := strings.Cut(fs[2], ":")
			if !ok {
				continue
			}
			var p int
			fmt.Sscanf(rport, "%X", &p)
			if ports[p] && inodes[fs[9]] {
				count++
			}
		}
		f.Close()
	}
	return count
}
