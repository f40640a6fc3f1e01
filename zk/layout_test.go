package zk_test

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/regkit/regkit/internal/testenv"
	"github.com/regkit/regkit/registry"
	rzk "github.com/regkit/regkit/zk"
)

// A service's directory is a container node in the regkit and curator layouts: once
// its last instance deregisters, the server removes it (ZooKeeper 3.5+; the test
// server checks every second), instead of leaving an empty persistent znode per
// service ever registered.
func TestServiceDirectoryGoesWithLastInstance(t *testing.T) {
	e := newEnv(t)
	zc := e.adm(t)
	for _, layout := range []string{"regkit", "curator"} {
		t.Run(layout, func(t *testing.T) {
			c := openURL(t, "zk://"+e.srv.Addr()+"/"+layout+"-dirs?layout="+layout)
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			dir := c.Conn().(*rzk.Conn).ServicePath("gone")
			r, err := c.Register(ctx, registry.Instance{Service: "gone", ID: "g1", Host: "127.0.0.1", Port: 7801})
			if err != nil {
				t.Fatal(err)
			}
			ok, st, err := zc.Exists(dir)
			if err != nil || !ok {
				t.Fatalf("Exists(%s) = %v, %v", dir, ok, err)
			}
			if err := r.Close(); err != nil {
				t.Fatal(err)
			}
			testenv.Eventually(t, 20*time.Second, "the empty service directory removed", func() error {
				ok, _, err := zc.Exists(dir)
				if err != nil {
					return err
				}
				if ok {
					return fmt.Errorf("%s still exists (ephemeralOwner %x, %d children at creation)", dir, st.EphemeralOwner, st.NumChildren)
				}
				return nil
			})
			// Registering again recreates it.
			r, err = c.Register(ctx, registry.Instance{Service: "gone", ID: "g2", Host: "127.0.0.1", Port: 7802})
			if err != nil {
				t.Fatal(err)
			}
			defer r.Close()
			got, err := c.Instances(ctx, "gone")
			if err != nil || len(got) != 1 || got[0].ID != "g2" {
				t.Fatalf("Instances = %v, %v; want g2", got, err)
			}
		})
	}
}

// IDs that ZooKeeper cannot store as a node name are FieldErrors before any write,
// as on every backend (they used to pass validation and fail on the server).
func TestUnstorableIDsRejected(t *testing.T) {
	e := newEnv(t)
	c := openURL(t, "zk://"+e.srv.Addr()+"/ids")
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	for _, id := range []string{".", "..", "a\u0085b", "a\ue000b", "a\ufff0b"} {
		_, err := c.Register(ctx, registry.Instance{Service: "ids", ID: id, Host: "127.0.0.1", Port: 7803})
		var fe *registry.FieldError
		if !errors.As(err, &fe) || fe.Field != "ID" {
			t.Errorf("Register(ID %q) = %v, want a FieldError for ID", id, err)
		}
	}
}

// A recursive store delete of an ancestor of the registry's tree (curator base
// /a/b: <chroot>/a) deletes its other descendants, keeps the node and the tree
// (registrations stay), and says so with ErrNotEmpty; it used to fail halfway
// with ZooKeeper's "node has children".
func TestStoreDeleteAboveRegistryTree(t *testing.T) {
	e := newEnv(t)
	c := openURL(t, "zk://"+e.srv.Addr()+"/above?layout=curator&base=/a/b")
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	r, err := c.Register(ctx, registry.Instance{Service: "svc", ID: "i1", Host: "127.0.0.1", Port: 7811})
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	st := c.Store()
	for _, k := range []string{"/a/x/y", "/a/z"} {
		if _, err := st.Create(ctx, k, []byte("v")); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := st.Create(ctx, "/a/b/svc/ghost", nil); !errors.Is(err, registry.ErrInvalid) {
		t.Fatalf("Create inside the registry's tree = %v, want ErrInvalid", err)
	}
	if err := st.Delete(ctx, "/a", registry.Recursive()); !errors.Is(err, registry.ErrNotEmpty) {
		t.Fatalf("Delete(/a, Recursive) = %v, want ErrNotEmpty", err)
	}
	kids, err := st.Children(ctx, "/a")
	if err != nil || len(kids) != 0 {
		t.Fatalf("Children(/a) = %v, %v; want none (the registry's tree is hidden)", kids, err)
	}
	got, err := c.Instances(ctx, "svc")
	if err != nil || len(got) != 1 || got[0].ID != "i1" || r.State() != registry.Registered {
		t.Fatalf("Instances = %v, %v (state %v); want i1", got, err, r.State())
	}
	if err := st.Delete(ctx, "/", registry.Recursive()); err != nil {
		t.Fatalf("Delete(/, Recursive) = %v", err)
	}
}
