package main

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/url"
	"os"
	"time"

	"go.etcd.io/etcd/server/v3/embed"
	"go.uber.org/zap"
)

// embeddedEtcd is a real single-member etcd server running inside this process.
type embeddedEtcd struct {
	e        *embed.Etcd
	dir      string
	endpoint string
}

// startEmbeddedEtcd starts etcd on free loopback ports with its data in a new
// temporary directory, and waits until it serves or ctx ends.
func startEmbeddedEtcd(ctx context.Context) (*embeddedEtcd, error) {
	dir, err := os.MkdirTemp("", "regkit-quickstart-etcd-")
	if err != nil {
		return nil, err
	}
	client, peer := freeAddr(), freeAddr()
	if client == "" || peer == "" {
		os.RemoveAll(dir)
		return nil, errors.New("quickstart: no free loopback port")
	}
	cfg := embed.NewConfig()
	cfg.Name = "quickstart"
	cfg.Dir = dir
	cu, pu := url.URL{Scheme: "http", Host: client}, url.URL{Scheme: "http", Host: peer}
	cfg.ListenClientUrls, cfg.AdvertiseClientUrls = []url.URL{cu}, []url.URL{cu}
	cfg.ListenPeerUrls, cfg.AdvertisePeerUrls = []url.URL{pu}, []url.URL{pu}
	cfg.InitialCluster = cfg.InitialClusterFromName(cfg.Name)
	cfg.Logger = "zap"
	cfg.ZapLoggerBuilder = embed.NewZapLoggerBuilder(zap.NewNop())
	e, err := embed.StartEtcd(cfg)
	if err != nil {
		os.RemoveAll(dir)
		return nil, fmt.Errorf("quickstart: start embedded etcd: %w", err)
	}
	ee := &embeddedEtcd{e: e, dir: dir, endpoint: client}
	select {
	case <-e.Server.ReadyNotify():
		return ee, nil
	case err = <-e.Err():
	case <-ctx.Done():
		err = ctx.Err()
	case <-time.After(30 * time.Second):
		err = errors.New("not ready after 30s")
	}
	ee.Close()
	return nil, fmt.Errorf("quickstart: embedded etcd: %w", err)
}

// Endpoint is the client address, host:port.
func (e *embeddedEtcd) Endpoint() string { return e.endpoint }

// Close stops the server and removes its data.
func (e *embeddedEtcd) Close() {
	e.e.Close()
	os.RemoveAll(e.dir)
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
