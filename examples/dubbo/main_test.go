package main

import (
	"bytes"
	"context"
	"strings"
	"testing"
	"time"

	"github.com/regkit/regkit/internal/testenv"
)

// The consumer finds the fixture's Java providers in a real ZooKeeper, decodes
// their URLs (protocol, application, version, weight, methods) and balances over
// the version it consumes by weight.
func TestDubboExample(t *testing.T) {
	zk := testenv.StartZooKeeper(t)
	t.Setenv("REGKIT_URL", "zk://"+zk.Addr()+"/dubbo-example?layout=dubbo")
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	var out bytes.Buffer
	if err := run(ctx, &out, true, "1.0.0"); err != nil {
		t.Fatalf("dubbo example: %v\n%s", err, out.String())
	}
	for _, want := range []string{
		"fixture: 3 Java Dubbo providers of org.apache.dubbo.demo.DemoService registered",
		"provider dubbo://10.0.0.11:20880 application=demo-provider version=1.0.0 weight=100 methods=sayHello,sayHelloAsync",
		"provider dubbo://10.0.0.12:20880 application=demo-provider version=1.0.0 weight=200",
		"provider tri://10.0.0.13:50051 application=demo-provider-v2 version=2.0.0 weight=100",
		"consuming org.apache.dubbo.demo.DemoService version 1.0.0: 2 providers",
		"10 of 30 calls to 10.0.0.11:20880",
		"20 of 30 calls to 10.0.0.12:20880",
	} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("output lacks %q:\n%s", want, out.String())
		}
	}
	if strings.Contains(out.String(), "calls to 10.0.0.13") {
		t.Errorf("a provider of another version was picked:\n%s", out.String())
	}
}
