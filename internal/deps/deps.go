// Package deps pins the dependencies the backends will use while they are written.
// Removed once every backend imports its client.
package deps

import (
	_ "github.com/cenkalti/backoff/v4"
	_ "github.com/go-zookeeper/zk"
	_ "github.com/hashicorp/consul/api"
	_ "go.etcd.io/etcd/client/v3"
	_ "go.etcd.io/etcd/server/v3/embed"
	_ "go.uber.org/goleak"
	_ "google.golang.org/grpc"
)
