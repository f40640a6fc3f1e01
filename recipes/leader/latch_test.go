package leader_test

import (
	"context"
	"errors"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/regkit/regkit/internal/poll"
	"github.com/regkit/regkit/mem"
	"github.com/regkit/regkit/recipes"
	"github.com/regkit/regkit/recipes/leader"
	"github.com/regkit/regkit/registry"
	"github.com/regkit/regkit/registry/driver"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// failingSessions is a mem connection whose NewSession fails: the first call
// with errFirst, later ones with errLater once later is closed.
type failingSessions struct {
	*mem.Conn
	mu    sync.Mutex
	calls int
	later chan struct{}
}

var (
	errFirst = errors.New("first failure")
	errLater = errors.New("later failure")
)

func (f *failingSessions) NewSession(ctx context.Context, spec driver.SessionSpec) (driver.SessionConn, error) {
	f.mu.Lock()
	f.calls++
	first := f.calls == 1
	f.mu.Unlock()
	if first {
		return nil, errFirst
	}
	select {
	case <-f.later:
		return nil, errLater
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

// doneSignal is a context that says when Done is first asked for.
type doneSignal struct {
	context.Context
	once  sync.Once
	asked chan struct{}
}

func (d *doneSignal) Done() <-chan struct{} {
	d.once.Do(func() { close(d.asked) })
	return d.Context.Done()
}

// Await's error named the campaign error of the moment Await began, not the
// latest one.
func TestLatchAwaitNamesTheLatestError(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	base, err := registry.Open(ctx, "mem://latch-await-error")
	if err != nil {
		t.Fatal(err)
	}
	defer base.Close()
	fs := &failingSessions{Conn: base.Conn().(*mem.Conn), later: make(chan struct{})}
	c, err := registry.NewClient(func(driver.Config) (driver.Conn, error) { return fs, nil })
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	l, err := leader.NewLatch(c, "/el", recipes.WithRetryBackoff(time.Millisecond, 2*time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close(ctx)
	poll.Until(t, 10*time.Second, "the first failure", func() error {
		if !errors.Is(l.Err(), errFirst) {
			return errors.New("not yet")
		}
		return nil
	})
	actx, acancel := context.WithCancel(ctx)
	dctx := &doneSignal{Context: actx, asked: make(chan struct{})}
	go func() {
		<-dctx.asked // Await is waiting, having read errFirst
		close(fs.later)
		if err := poll.Wait(10*time.Second, func() error {
			if !errors.Is(l.Err(), errLater) {
				return errors.New("not yet")
			}
			return nil
		}); err != nil {
			t.Errorf("the later failure: %v", err)
		}
		acancel()
	}()
	_, err = l.Await(dctx)
	if !errors.Is(err, context.Canceled) || !strings.Contains(err.Error(), errLater.Error()) {
		t.Errorf("Await = %v; want context.Canceled naming %q", err, errLater)
	}
}
