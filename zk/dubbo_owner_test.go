package zk_test

import (
	"context"
	"errors"
	"fmt"
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
