package zk_test

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"sync"
	"testing"
	"time"

	"github.com/regkit/regkit/registry"
)

// In the dubbo layout node names are provider URLs, so two sessions putting one
// ID at two addresses create two nodes: the check before the create cannot stop
// both. After its create each Put looks again, and the later node (the greater
// creation zxid) steps back: at most one of two racing Registers succeeds. Both
// used to succeed now and then, and both stayed registered (CI's OneOwnerPerID on
// the dubbo layout failed so).
func TestDubboRacingRegistersOneOwner(t *testing.T) {
	e := newEnv(t)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	u := "zk://" + e.srv.Addr() + "/dubborace?layout=dubbo&session_timeout=4s"
	a, b := openURL(t, u), openURL(t, u)
	defer a.Close()
	defer b.Close()
	for round := range 30 {
		svc := fmt.Sprintf("org.example.Race%d", round)
		var wg sync.WaitGroup
		regs := make([]registry.Registration, 2)
		errs := make([]error, 2)
		start := make(chan struct{})
		for i, c := range []*registry.Client{a, b} {
			wg.Add(1)
			go func() {
				defer wg.Done()
				<-start
				regs[i], errs[i] = c.Register(ctx, registry.Instance{Service: svc, ID: "p1", Host: "10.0.0.1", Port: 20880 + i})
			}()
		}
		close(start)
		wg.Wait()
		won := 0
		for i := range regs {
			if errs[i] == nil {
				won++
				defer regs[i].Close()
			} else if !errors.Is(errs[i], registry.ErrExists) {
				t.Fatalf("round %d: Register %d = %v, want nil or ErrExists", round, i, errs[i])
			}
		}
		if won != 1 {
			t.Fatalf("round %d: %d of two racing Registers of one ID succeeded, want exactly one", round, won)
		}
	}
}

// One interface exported in two versions on one host:port, registered without
// IDs, is two providers, as a Java Dubbo provider's two URLs are: each gets the ID
// the layout reads back from its URL (Host:Port;version=V). Both used to get
// Host:Port, so the second Register failed with ErrExists.
func TestDubboDefaultIDCarriesGroupAndVersion(t *testing.T) {
	e := newEnv(t)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	c := openURL(t, "zk://"+e.srv.Addr()+"/dubboid?layout=dubbo&session_timeout=4s")
	defer c.Close()
	const svc = "org.example.Greeter"
	want := map[string]bool{}
	for _, md := range []map[string]string{
		{"version": "1.0.0"},
		{"version": "2.0.0"},
		{"group": "blue", "version": "2.0.0"},
	} {
		reg, err := c.Register(ctx, registry.Instance{Service: svc, Host: "10.0.0.7", Port: 20880, Metadata: md})
		if err != nil {
			t.Fatalf("Register %v: %v", md, err)
		}
		defer reg.Close()
		want[reg.Instance().ID] = true
	}
	for _, id := range []string{"10.0.0.7:20880;version=1.0.0", "10.0.0.7:20880;version=2.0.0", "10.0.0.7:20880;group=blue;version=2.0.0"} {
		if !want[id] {
			t.Errorf("no registration got ID %q; got %v", id, want)
		}
	}
	list, err := c.Instances(ctx, svc)
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]bool{}
	for _, in := range list {
		got[in.ID] = true
	}
	if len(got) != 3 || !maps.Equal(got, want) {
		t.Fatalf("listed %v, want the three registered %v", got, want)
	}
}
