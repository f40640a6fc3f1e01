package zk_test

import (
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/go-zookeeper/zk"
	"github.com/regkit/regkit/internal/testenv"
	rzk "github.com/regkit/regkit/zk"
)

// TestResumedSessionRaceFree pins the data race that the reply gate in conn.go
// (sniffConn.readFramed) keeps out of go-zookeeper v1.0.4 (go-zookeeper/zk#35, the
// latest release on the module proxy; no maintained fork fixes it): when a
// connection resumes its session with watches armed, go-zookeeper's loop goroutine
// reads lastZxid while building the SetWatches requests, once per 128 KiB of watch
// paths, while its new receive goroutine writes lastZxid for every answer. Writing
// SetWatches orders the two for the race detector (both goroutines then use the
// same socket), so the race shows only when an answer is read before that write:
// requests queued while disconnected go out first and are answered while thousands
// of watches are still being packed. Without the gate, `go test -race` fails here
// with "race detected" in sendSetWatches (3 runs of 3); with it, it passes.
func TestResumedSessionRaceFree(t *testing.T) {
	e := newEnv(t)
	c := e.open(t, "gate")
	defer c.Close()
	zc := c.Conn().(*rzk.Conn).Client()
	const watches = 20000
	for round := range 3 {
		// Watches to re-send on the resumed session: enough that building the
		// SetWatches requests (reading lastZxid once per 128 KiB) takes a while.
		var arm sync.WaitGroup
		errs := make(chan error, watches)
		for w := range 16 {
			arm.Add(1)
			go func() {
				defer arm.Done()
				for i := w; i < watches; i += 16 {
					if _, _, _, err := zc.ExistsW(fmt.Sprintf("/gate/watch-%d-%06d-padding-to-make-paths-longer", round, i)); err != nil {
						errs <- err
						return
					}
				}
			}()
		}
		arm.Wait()
		close(errs)
		for err := range errs {
			t.Fatal(err)
		}
		sid := zc.SessionID()
		e.proxy.Cut()
		testenv.Eventually(t, 10*time.Second, "disconnected", func() error {
			if st := zc.State(); st == zk.StateHasSession {
				return fmt.Errorf("state %v", st)
			}
			return nil
		})
		// Requests queued while disconnected: answered as soon as the session is back.
		var wg sync.WaitGroup
		for range 16 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				_, _, _ = zc.Exists("/")
			}()
		}
		e.proxy.Heal()
		wg.Wait()
		testenv.Eventually(t, 10*time.Second, "session resumed", func() error {
			if zc.State() != zk.StateHasSession || zc.SessionID() != sid {
				return fmt.Errorf("state %v session %x (was %x)", zc.State(), zc.SessionID(), sid)
			}
			return nil
		})
	}
}
