package driver_test

import (
	"errors"
	"fmt"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/regkit/regkit/registry/driver"
)

// TestParamsNumbersAreStrict: a number in the URL query is plain decimal digits
// (Int: with a leading "-"); strconv.Atoi's and time.ParseDuration's "+" is
// refused, naming the parameter.
func TestParamsNumbersAreStrict(t *testing.T) {
	for _, q := range []string{"n=%2B5", "n=%205", "n=5%20", "n=0x10", "d=%2B3s", "d=-0s", "d=%203s"} {
		u := &url.URL{Scheme: "x", Host: "h", RawQuery: q}
		p := driver.NewParams(u)
		p.Int("n", 1)
		p.Duration("d", time.Second)
		var fe *driver.FieldError
		err := p.Done()
		if !errors.As(err, &fe) || !errors.Is(err, driver.ErrInvalid) || fe.Field != q[:1] {
			t.Errorf("%s: Done() = %v, want a FieldError naming %s", q, err, q[:1])
		}
	}
	p := driver.NewParams(&url.URL{Scheme: "x", Host: "h", RawQuery: "n=-5&d=3s&m=007"})
	if n, d, m := p.Int("n", 1), p.Duration("d", 0), p.Int("m", 0); n != -5 || d != 3*time.Second || m != 7 || p.Done() != nil {
		t.Errorf("n=-5&d=3s&m=007: %d %v %d %v", n, d, m, p.Done())
	}
}

// TestHostsPortIsDigits: a port in a host list is decimal digits; "+2379" was
// taken by strconv.Atoi (url.Parse checks only the last host's port).
func TestHostsPortIsDigits(t *testing.T) {
	for _, host := range []string{"h1:+2379,h2:2379", "[::1]:+2379,h2", "h1: 2379,h2", "h:+2379"} {
		u, err := url.Parse("x://" + host)
		if err != nil {
			u = &url.URL{Scheme: "x", Host: host}
		}
		_, err = driver.Hosts(u, 1)
		if !errors.Is(err, driver.ErrInvalid) || !strings.Contains(fmt.Sprint(err), "port") {
			t.Errorf("%s: Hosts error %v, want ErrInvalid naming the port", host, err)
		}
	}
	u := &url.URL{Scheme: "x", Host: "h1:2379,h2"}
	if hs, err := driver.Hosts(u, 2379); err != nil || len(hs) != 2 {
		t.Errorf("h1:2379,h2: %v %v", hs, err)
	}
}
