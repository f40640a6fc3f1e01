package zk_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sync/atomic"
	"testing"
	"time"

	"github.com/regkit/regkit/internal/testenv"
	"github.com/regkit/regkit/registry"
)

// Issue 14 item 6 on ZooKeeper: a registration whose local health check fails is
// marked unhealthy in its node and stays listed: the regkit record gets
// "healthy": false, as etcd's does, and loses it once the check passes. It used
// to be withdrawn instead (Capabilities.Health was false on every layout). The
// curator and dubbo layouts still withdraw (see regLease.SetHealthy).
func TestHealthCheckMarksTheNode(t *testing.T) {
	e := newEnv(t)
	adm := e.adm(t) // the test's, not a subtest's
	for _, tc := range []struct {
		layout, query, field string
	}{
		{"regkit", "", "healthy"},
	} {
		t.Run(tc.layout, func(t *testing.T) {
			e.query = tc.query
			ns := "health-" + tc.layout
			a, b := e.open(t, ns), e.open(t, ns)
			defer a.Close()
			defer b.Close()
			if !a.Capabilities().Health {
				t.Fatalf("%s layout: Capabilities.Health false, want true", tc.layout)
			}
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			var ok atomic.Bool
			check := func(context.Context) error {
				if ok.Load() {
					return nil
				}
				return errors.New("dependency down")
			}
			r, err := a.Register(ctx, registry.Instance{Service: "hsvc", ID: "h1", Host: "10.0.0.1", Port: 80},
				registry.WithHealthCheck(check, 50*time.Millisecond, registry.MarkUnhealthy))
			if err != nil {
				t.Fatal(err)
			}
			defer r.Close()
			path := "/" + ns + "/services/hsvc/h1"
			field := func() (*bool, error) {
				data, _, err := adm.Get(path)
				if err != nil {
					return nil, err
				}
				var m map[string]any
				if err := json.Unmarshal(data, &m); err != nil {
					return nil, err
				}
				v, present := m[tc.field]
				if !present {
					return nil, nil
				}
				bv, isBool := v.(bool)
				if !isBool {
					return nil, fmt.Errorf("%s is %v, not a boolean", tc.field, v)
				}
				return &bv, nil
			}
			listed := func(healthy bool) func() error {
				return func() error {
					l, err := b.Instances(ctx, "hsvc")
					if err != nil {
						return err
					}
					if len(l) != 1 || l[0].ID != "h1" || l[0].Healthy != healthy {
						return fmt.Errorf("listed %v, want h1 with Healthy %v", l, healthy)
					}
					return nil
				}
			}
			testenv.Eventually(t, 20*time.Second, "node marked unhealthy", func() error {
				v, err := field()
				if err != nil {
					return err
				}
				if v == nil || *v {
					return fmt.Errorf("%s is %v, want false", tc.field, v)
				}
				return nil
			})
			testenv.Eventually(t, 20*time.Second, "listed unhealthy", listed(false))
			if r.State() != registry.Registered || r.Healthy() {
				t.Errorf("state %v, Healthy %v; want Registered and unhealthy", r.State(), r.Healthy())
			}
			ok.Store(true)
			testenv.Eventually(t, 20*time.Second, "field gone once the check passes", func() error {
				v, err := field()
				if err != nil {
					return err
				}
				if v != nil {
					return fmt.Errorf("%s is %v, want it absent", tc.field, *v)
				}
				return nil
			})
			testenv.Eventually(t, 20*time.Second, "listed healthy", listed(true))
		})
	}
}
