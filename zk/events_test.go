package zk_test

import (
	"fmt"
	"testing"
	"time"

	"github.com/go-zookeeper/zk"
	"github.com/regkit/regkit/registry/driver"
)

// A subscription applies what the re-arming replies carry: after its Reset, a
// created, changed or deleted instance arrives as a put or a delete (not as a
// new complete listing), and the session's expiry ends it with Err.
func TestSubscribeEventsAppliesChanges(t *testing.T) {
	e := newEnv(t)
	c := e.open(t, "ev")
	defer c.Close()
	ew, ok := c.Conn().(driver.EventWatcher)
	if !ok {
		t.Fatal("the zk Conn does not implement driver.EventWatcher")
	}
	changes := make(chan driver.Change, 100)
	cancel, err := ew.SubscribeEvents("api", func(ch driver.Change) { changes <- ch })
	if err != nil {
		t.Fatal(err)
	}
	defer cancel()
	next := func(what string) driver.Change {
		t.Helper()
		select {
		case ch := <-changes:
			return ch
		case <-time.After(20 * time.Second):
			t.Fatalf("no change: %s", what)
		}
		return driver.Change{}
	}
	if ch := next("first"); !ch.Reset || len(ch.Listing.Instances) != 0 || ch.Err != nil {
		t.Fatalf("first call %+v, want an empty Reset", ch)
	}
	adm := e.adm(t)
	acl := zk.WorldACL(zk.PermAll)
	for _, p := range []string{"/ev", "/ev/services", "/ev/services/api"} {
		if _, err := adm.Create(p, nil, 0, acl); err != nil && err != zk.ErrNodeExists {
			t.Fatal(err)
		}
	}
	rec := func(port int) []byte {
		return fmt.Appendf(nil, `{"id":"a1","service":"api","host":"127.0.0.1","port":%d,"weight":100}`, port)
	}
	if _, err := adm.Create("/ev/services/api/a1", rec(1), 0, acl); err != nil {
		t.Fatal(err)
	}
	if ch := next("create"); ch.Reset || ch.Err != nil || len(ch.Puts) != 1 || ch.Puts[0].ID != "a1" || ch.Puts[0].Port != 1 {
		t.Fatalf("after the create: %+v, want a put of a1", ch)
	}
	if _, err := adm.Set("/ev/services/api/a1", rec(2), -1); err != nil {
		t.Fatal(err)
	}
	if ch := next("set"); ch.Reset || len(ch.Puts) != 1 || ch.Puts[0].Port != 2 {
		t.Fatalf("after the set: %+v, want a put of a1 with port 2", ch)
	}
	if _, err := adm.Set("/ev/services/api/a1", []byte("not json"), -1); err != nil {
		t.Fatal(err)
	}
	if ch := next("garbage"); ch.Reset || len(ch.Deletes) != 1 || ch.Deletes[0] != "a1" {
		t.Fatalf("after garbage data: %+v, want a delete of a1", ch)
	}
	if _, err := adm.Set("/ev/services/api/a1", rec(3), -1); err != nil {
		t.Fatal(err)
	}
	if ch := next("repaired"); ch.Reset || len(ch.Puts) != 1 || ch.Puts[0].Port != 3 {
		t.Fatalf("after the repair: %+v, want a put of a1 with port 3", ch)
	}
	if err := adm.Delete("/ev/services/api/a1", -1); err != nil {
		t.Fatal(err)
	}
	if ch := next("delete"); ch.Reset || len(ch.Deletes) != 1 || ch.Deletes[0] != "a1" {
		t.Fatalf("after the delete: %+v, want a delete of a1", ch)
	}
	e.expire(t, c)
	for {
		ch := next("expiry")
		if ch.Err != nil {
			break
		}
		if ch.Reset {
			t.Fatalf("a Reset after the expiry within the same subscription: %+v", ch)
		}
	}
	select {
	case ch := <-changes:
		t.Fatalf("a call after Err: %+v", ch)
	default:
	}
}
