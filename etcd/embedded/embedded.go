// Package embedded runs a real single-member etcd server inside the current process
// (go.etcd.io/etcd/server/v3/embed) on free loopback ports: a registry for demos,
// local development and tests that need no server installed. It is not meant for
// production: one member, no TLS, data in a directory of its own.
//
// It is a module of its own, github.com/regkit/regkit/etcd/embedded, so that the
// etcd server and its dependencies (OpenTelemetry, Prometheus, bbolt, raft) reach
// only the programs that import this package, not every user of regkit/etcd.
package embedded

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/url"
	"os"

	"go.etcd.io/etcd/server/v3/embed"
	"go.uber.org/zap"
)

// Server is a running embedded etcd.
type Server struct {
	e        *embed.Etcd
	dir      string
	ownDir   bool
	endpoint string
}

// Option configures Start.
type Option func(*config)

type config struct {
	dir string
}

// WithDataDir keeps the server's data in dir, which Close leaves in place; by
// default the data is in a new temporary directory that Close removes.
func WithDataDir(dir string) Option { return func(c *config) { c.dir = dir } }

// Start starts etcd on free 127.0.0.1 ports and waits until it serves or ctx ends.
func Start(ctx context.Context, opts ...Option) (*Server, error) {
	var cfg config
	for _, o := range opts {
		o(&cfg)
	}
	s := &Server{dir: cfg.dir}
	if s.dir == "" {
		dir, err := os.MkdirTemp("", "regkit-etcd-")
		if err != nil {
			return nil, fmt.Errorf("embedded etcd: %w", err)
		}
		s.dir, s.ownDir = dir, true
	}
	client, peer := freeAddr(), freeAddr()
	if client == "" || peer == "" {
		s.removeDir()
		return nil, errors.New("embedded etcd: no free loopback port")
	}
	ec := embed.NewConfig()
	ec.Name = "regkit"
	ec.Dir = s.dir
	cu, pu := url.URL{Scheme: "http", Host: client}, url.URL{Scheme: "http", Host: peer}
	ec.ListenClientUrls, ec.AdvertiseClientUrls = []url.URL{cu}, []url.URL{cu}
	ec.ListenPeerUrls, ec.AdvertisePeerUrls = []url.URL{pu}, []url.URL{pu}
	ec.InitialCluster = ec.InitialClusterFromName(ec.Name)
	ec.Logger = "zap"
	ec.ZapLoggerBuilder = embed.NewZapLoggerBuilder(zap.NewNop())
	e, err := embed.StartEtcd(ec)
	if err != nil {
		s.removeDir()
		return nil, fmt.Errorf("embedded etcd: start: %w", err)
	}
	s.e, s.endpoint = e, client
	select {
	case <-e.Server.ReadyNotify():
		return s, nil
	case err = <-e.Err():
	case <-ctx.Done():
		err = ctx.Err()
	}
	s.Close()
	return nil, fmt.Errorf("embedded etcd: not ready: %w", err)
}

// Endpoint is the client address, "127.0.0.1:port".
func (s *Server) Endpoint() string { return s.endpoint }

// URL is a regkit URL for this server with the given key prefix ("" for the
// default), e.g. "etcd://127.0.0.1:41234/demo".
func (s *Server) URL(prefix string) string {
	if prefix != "" && prefix[0] != '/' {
		prefix = "/" + prefix
	}
	return "etcd://" + s.endpoint + prefix
}

// Close stops the server and waits for it; it removes the data directory unless
// WithDataDir named it.
func (s *Server) Close() {
	s.e.Close()
	s.removeDir()
}

func (s *Server) removeDir() {
	if s.ownDir {
		os.RemoveAll(s.dir)
	}
}

// freeAddr returns a loopback address whose port was free a moment ago, or "".
func freeAddr() string {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return ""
	}
	defer l.Close()
	return l.Addr().String()
}
