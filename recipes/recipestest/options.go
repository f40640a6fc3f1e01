package recipestest

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/regkit/regkit/recipes"
	"github.com/regkit/regkit/recipes/barrier"
	"github.com/regkit/regkit/recipes/counter"
	"github.com/regkit/regkit/recipes/group"
	"github.com/regkit/regkit/recipes/leader"
	"github.com/regkit/regkit/registry"
)

// testInvalidOptions: every recipe constructor outside package lock refuses an
// option with an invalid value with a FieldError naming the option, and creates
// nothing (a Latch with a negative session TTL used to start and fail in the
// background for ever, its Await waiting out its context).
func (s *suite) testInvalidOptions(t *testing.T) {
	ns := namespace(t)
	ctx := s.ctx(t, 2)
	c := s.open(t, ns)
	sess := s.session(t, c)
	bad := map[string]recipes.Option{
		"WithSessionTTL":     recipes.WithSessionTTL(-time.Second),
		"WithRequestTimeout": recipes.WithRequestTimeout(0),
		"WithRetryBackoff":   recipes.WithRetryBackoff(time.Second, time.Millisecond),
		"WithPolicy":         recipes.WithPolicy(recipes.Policy(7)),
	}
	lead := func(ctx context.Context, term *recipes.Hold) error { return nil }
	for field, opt := range bad {
		ctors := map[string]func() (any, error){
			"NewElection": func() (any, error) { return leader.NewElection(c, sess, "/options/x", opt) },
			"NewLatch":    func() (any, error) { return leader.NewLatch(c, "/options/x", opt) },
			"NewSelector": func() (any, error) { return leader.NewSelector(c, "/options/x", lead, opt) },
			"NewMember":   func() (any, error) { return group.NewMember(c, "/options/x", "m", nil, opt) },
			"barrier.New": func() (any, error) { return barrier.New(c, "/options/x", opt) },
			"NewDouble":   func() (any, error) { return barrier.NewDouble(c, sess, "/options/x", 2, opt) },
			"NewCount":    func() (any, error) { return counter.NewCount(ctx, c, "/options/x", 0, opt) },
		}
		for name, ctor := range ctors {
			v, err := ctor()
			var fe *registry.FieldError
			if !errors.As(err, &fe) || fe.Field != field || !errors.Is(err, registry.ErrInvalid) {
				t.Errorf("%s with an invalid %s = %v, %v; want a FieldError naming %s", name, field, v, err, field)
			}
		}
	}
	if names, err := lockNodes(ctx, c, "/options/x"); err != nil || len(names) != 0 {
		t.Errorf("invalid options created %v (%v)", names, err)
	}
	if _, err := c.Store().Get(ctx, "/options/x"); !errors.Is(err, registry.ErrNotFound) {
		t.Errorf("invalid options created the key: Get = %v", err)
	}
}
