package reliability

import (
	"bufio"
	"context"
	"fmt"
	"os"
	"os/exec"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/regkit/regkit/internal/testenv"
	"github.com/regkit/regkit/registry"
	"github.com/regkit/regkit/registry/address"
)

// childEnv names the URL a re-executed test binary registers through.
const childEnv = "REGKIT_RELIABILITY_CHILD_URL"

// ChildMain must be called first in TestMain of a package that runs ProcessKill:
// in the re-executed child it registers one instance, says so on stdout and
// blocks until it is killed; elsewhere it returns at once.
func ChildMain() {
	u := os.Getenv(childEnv)
	if u == "" {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	c, err := registry.Open(ctx, u, registry.WithAddressResolver(&address.Resolver{IgnoreEnvironment: true}))
	if err == nil {
		_, err = c.Register(ctx, registry.Instance{Service: service, ID: "child", Host: "127.0.0.1", Port: 9999})
	}
	if err != nil {
		fmt.Println("error:", err)
		os.Exit(1)
	}
	fmt.Println("registered")
	select {} // until killed
}

// ProcessKill starts a child process (this test binary again) that registers
// through the cluster, kills it with SIGKILL and returns how long its
// registration stayed on the servers afterwards.
func ProcessKill(t *testing.T, tg *Target) Result {
	t.Helper()
	r := Result{Backend: tg.Backend, Scenario: "client process kill -9", Registrations: 1}
	ns := fmt.Sprintf("kill%d", time.Now().UnixNano()%1e6)
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), childEnv+"="+tg.URL(ns))
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() {
		cmd.Process.Kill()
		cmd.Wait()
	}()
	line, err := bufio.NewReader(out).ReadString('\n')
	if strings.TrimSpace(line) != "registered" {
		t.Fatalf("child: %q %v", line, err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), deadline)
	defer cancel()
	testenv.Eventually(t, deadline, "the child's registration on the servers", func() error {
		got, err := serverIDs(ctx, tg, ns)
		if err != nil || !slices.Contains(got, "child") {
			return fmt.Errorf("server has %v (%v)", got, err)
		}
		return nil
	})
	if err := cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	killed := time.Now()
	testenv.Eventually(t, deadline, "the killed child's registration gone", func() error {
		got, err := serverIDs(ctx, tg, ns)
		if err != nil || slices.Contains(got, "child") {
			return fmt.Errorf("server has %v (%v)", got, err)
		}
		return nil
	})
	r.RegsBackAfter = time.Since(killed) // here: how long the dead registration lasted
	r.Note = "gone from the servers " + r.RegsBackAfter.Round(10*time.Millisecond).String() + " after kill -9 (TTL " + tg.TTL.String() + ")"
	return r
}

// CheckProcessKill asserts that the dead process's registration went within the
// TTL plus what the backend adds to it (one ZooKeeper tick, etcd's lease
// keep-alive slack), bounded here as 2 TTL.
func CheckProcessKill(t testing.TB, tg *Target, r Result) {
	t.Helper()
	if r.RegsBackAfter > 2*tg.TTL {
		t.Errorf("%s: a killed process's registration lasted %v, TTL %v", tg.Backend, r.RegsBackAfter, tg.TTL)
	}
}
