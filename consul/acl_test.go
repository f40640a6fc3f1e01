package consul_test

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/hashicorp/consul/api"
	"github.com/regkit/regkit/internal/testenv"
	"github.com/regkit/regkit/registry"
)

const aclToken = "5d1e6c55-0f4b-4b7e-9d7b-1c2a3b4c5d6e"

// TestACL runs against an agent with ACLs on and default policy deny: the token from
// the URL or from WithCredentials works for registration, discovery and the store; no
// token or a wrong one gets an error matching ErrPermission that names the ACL.
func TestACL(t *testing.T) {
	s := startServer(t, testenv.WithConsulACL(aclToken))
	ctx := ctxT(t, time.Minute)

	for name, open := range map[string]func() *registry.Client{
		"url token":   func() *registry.Client { return s.open(t, "acl", "token="+aclToken) },
		"credentials": func() *registry.Client { return s.open(t, "acl", "", registry.WithCredentials("", aclToken)) },
	} {
		t.Run(name, func(t *testing.T) {
			c := open()
			defer c.Close()
			r, err := c.Register(ctx, registry.Instance{Service: "secure", ID: name, Host: "127.0.0.1", Port: 9000})
			if err != nil {
				t.Fatal(err)
			}
			defer r.Close()
			testenv.Eventually(t, 10*time.Second, "registered instance visible", func() error {
				got, err := c.Instances(ctx, "secure")
				if err != nil {
					return err
				}
				if len(got) != 1 || got[0].ID != name {
					return fmt.Errorf("got %v", ids(got))
				}
				return nil
			})
			sess, err := c.NewSession(ctx)
			if err != nil {
				t.Fatal(err)
			}
			defer sess.Close()
			if _, err := c.Store().Create(ctx, "/acl/"+sess.ID(), []byte("x"), registry.Ephemeral(sess)); err != nil {
				t.Fatal(err)
			}
		})
	}

	t.Run("no token", func(t *testing.T) {
		admin := s.open(t, "acl", "token="+aclToken)
		defer admin.Close()
		r, err := admin.Register(ctx, registry.Instance{Service: "secure", ID: "hidden", Host: "127.0.0.1", Port: 9002})
		if err != nil {
			t.Fatal(err)
		}
		defer r.Close()
		// A valid token without any policy: Consul filters every instance out.
		tok, _, err := s.admin.ACL().TokenCreate(&api.ACLToken{Description: "no rights"}, nil)
		if err != nil {
			t.Fatal(err)
		}
		weak := s.open(t, "acl", "token="+tok.SecretID)
		defer weak.Close()
		if _, err := weak.Conn().List(ctx, "secure"); !errors.Is(err, registry.ErrPermission) || !errContains(err, "ACL") {
			t.Errorf("List with a token without rights = %v, want ErrPermission naming the ACL", err)
		}
		c := s.open(t, "acl", "")
		defer c.Close()
		_, err = c.Conn().Put(ctx, registry.Instance{Service: "secure", ID: "anon", Host: "127.0.0.1", Port: 9001, Weight: 1})
		if !errors.Is(err, registry.ErrPermission) || !errContains(err, "ACL") {
			t.Errorf("Put without token = %v, want ErrPermission naming the ACL", err)
		}
		if _, err := c.Store().Get(ctx, "/acl"); !errors.Is(err, registry.ErrPermission) {
			t.Errorf("Get without token = %v, want ErrPermission", err)
		}
		if _, err := c.NewSession(ctx); !errors.Is(err, registry.ErrPermission) {
			t.Errorf("NewSession without token = %v, want ErrPermission", err)
		}
	})

	t.Run("wrong token", func(t *testing.T) {
		_, err := registry.Open(ctx, s.url("acl", "token=00000000-0000-0000-0000-000000000000"))
		if !errors.Is(err, registry.ErrPermission) || !errContains(err, "ACL") {
			t.Errorf("Open with a wrong token = %v, want ErrPermission naming the ACL", err)
		}
	})

	t.Run("token and credentials disagree", func(t *testing.T) {
		_, err := registry.Open(context.Background(), s.url("acl", "token=a"), registry.WithCredentials("", "b"))
		if !errors.Is(err, registry.ErrInvalid) {
			t.Errorf("Open = %v, want ErrInvalid", err)
		}
	})
}
