package mem_test

import (
	"context"
	"fmt"

	"github.com/regkit/regkit/mem"
	"github.com/regkit/regkit/registry"
)

// A unit test can inject a session expiry and watch the registration come back.
func Example() {
	ctx := context.Background()
	c, _ := registry.Open(ctx, "mem://example-expiry")
	defer c.Close()
	reg, _ := c.Register(ctx, registry.Instance{Service: "api", Host: "10.1.2.3", Port: 80})
	changed := reg.Changed()

	c.Conn().(*mem.Conn).ExpireSession() // the backend drops everything this client kept alive
	<-changed
	for reg.State() != registry.Registered {
		<-reg.Changed()
	}
	got, _ := c.Instances(ctx, "api")
	fmt.Println(reg.State(), len(got))
	// Output:
	// registered 1
}
