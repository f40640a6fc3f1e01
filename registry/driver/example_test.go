package driver_test

import (
	"errors"
	"fmt"
	"net/url"
	"time"

	"github.com/regkit/regkit/registry/driver"
)

// A driver's Open reads its URL parameters with Params, which rejects the ones it
// never read, and its typed options with ApplyOptions, which rejects another
// backend's.
func Example() {
	u, _ := url.Parse("demo://h1,h2:7000/prefix?dial_timeout=3s&typo=1")
	hosts, _ := driver.Hosts(u, 6000)
	p := driver.NewParams(u)
	dial := p.Duration("dial_timeout", 5*time.Second)
	fmt.Println(hosts, dial, p.Done())

	type option func(*time.Duration) error // the backend's own option type
	ttl := 10 * time.Second
	opts := []driver.Option{
		{Name: "demo.WithTTL", Value: option(func(d *time.Duration) error { *d = 20 * time.Second; return nil })},
		{Name: "other.WithX", Value: 42}, // given to the wrong backend
	}
	err := driver.ApplyOptions("demo", opts, func(o option) error { return o(&ttl) })
	fmt.Println(ttl, errors.Is(err, driver.ErrInvalid), err)
	// Output:
	// [h1:6000 h2:7000] 3s registry: invalid url "demo://h1,h2:7000/prefix?dial_timeout=3s&typo=1": unknown query parameter "typo" (known: dial_timeout)
	// 10s true registry: invalid option "other.WithX": not an option of the demo backend
}
