package main

import (
	"context"
	"errors"
	"fmt"
	"net/url"
	"strings"
	"time"

	"github.com/go-zookeeper/zk"
)

// Interface is the Java interface the fixture's providers export.
const Interface = "org.apache.dubbo.demo.DemoService"

// javaProviders are provider URLs as Java Dubbo 3.2 writes them for
// interface-level registration (register-mode=interface or all) of
// DemoService: two providers of version 1.0.0 (one with weight 200) and one of
// version 2.0.0, the query parameters in Dubbo's order.
var javaProviders = []string{
	"dubbo://10.0.0.11:20880/" + Interface + "?anyhost=true&application=demo-provider&background=false&deprecated=false" +
		"&dubbo=2.0.2&dynamic=true&executor-management-mode=isolation&file-cache=true&generic=false&interface=" + Interface +
		"&methods=sayHello,sayHelloAsync&pid=4117&prefer.serialization=fastjson2,hessian2&release=3.2.11" +
		"&service-name-mapping=true&side=provider&timestamp=1712345678901&version=1.0.0",
	"dubbo://10.0.0.12:20880/" + Interface + "?anyhost=true&application=demo-provider&background=false&deprecated=false" +
		"&dubbo=2.0.2&dynamic=true&executor-management-mode=isolation&file-cache=true&generic=false&interface=" + Interface +
		"&methods=sayHello,sayHelloAsync&pid=4242&prefer.serialization=fastjson2,hessian2&release=3.2.11" +
		"&service-name-mapping=true&side=provider&timestamp=1712345679012&version=1.0.0&weight=200",
	"tri://10.0.0.13:50051/" + Interface + "?anyhost=true&application=demo-provider-v2&background=false&deprecated=false" +
		"&dubbo=2.0.2&dynamic=true&generic=false&interface=" + Interface +
		"&methods=sayHello,sayHelloAsync,sayHelloStream&pid=5120&release=3.2.11" +
		"&service-name-mapping=true&side=provider&timestamp=1712345680123&version=2.0.0",
}

// writeFixture registers javaProviders in the ZooKeeper of rawURL the way Java
// Dubbo's ZookeeperRegistry does: persistent /<chroot>/dubbo/<interface>/providers,
// under it one ephemeral node per provider named by the URL-encoded URL, holding
// the provider's IP (Curator's default data). The nodes live as long as the
// returned ZooKeeper session; close it to "stop" the providers.
func writeFixture(ctx context.Context, rawURL string) (*zk.Conn, error) {
	u, err := url.Parse(rawURL)
	if err != nil {
		return nil, err
	}
	chroot := strings.TrimSuffix(u.Path, "/")
	conn, events, err := zk.Connect(strings.Split(u.Host, ","), 10*time.Second, zk.WithLogInfo(false))
	if err != nil {
		return nil, err
	}
	for conn.State() != zk.StateHasSession {
		select {
		case <-events:
		case <-ctx.Done():
			conn.Close()
			return nil, fmt.Errorf("fixture: ZooKeeper %s: %w", u.Host, ctx.Err())
		}
	}
	dir := chroot + "/dubbo/" + Interface + "/providers"
	path := ""
	for _, part := range strings.Split(strings.TrimPrefix(dir, "/"), "/") {
		path += "/" + part
		if _, err := conn.Create(path, nil, 0, zk.WorldACL(zk.PermAll)); err != nil && !errors.Is(err, zk.ErrNodeExists) {
			conn.Close()
			return nil, fmt.Errorf("fixture: create %s: %w", path, err)
		}
	}
	for _, p := range javaProviders {
		pu, _ := url.Parse(p)
		if _, err := conn.Create(dir+"/"+url.QueryEscape(p), []byte(pu.Hostname()), zk.FlagEphemeral, zk.WorldACL(zk.PermAll)); err != nil {
			conn.Close()
			return nil, fmt.Errorf("fixture: create provider: %w", err)
		}
	}
	return conn, nil
}
