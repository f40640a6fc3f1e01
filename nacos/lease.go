package nacos

import (
	"context"
	"fmt"
	"net"
	"strconv"
	"time"

	"github.com/regkit/regkit/internal/inflight"
	"github.com/regkit/regkit/registry/driver"
)

// lease keeps one registered instance alive: heartbeats for ephemeral instances,
// presence checks for all (see the package doc, Liveness). Its goroutine is owned by
// the Conn.
type lease struct {
	c    *Conn
	inst driver.Instance
	api  string
	put  time.Time

	cancel  context.CancelFunc
	stopped chan struct{}

	sig driver.LostSignal
}

var _ driver.Lease = (*lease)(nil)

// Put registers inst and starts keeping it alive.
func (c *Conn) Put(ctx context.Context, inst driver.Instance) (driver.Lease, error) {
	api, err := c.currentAPI(ctx)
	if err != nil {
		return nil, err
	}
	if err := c.claim(ctx, api, inst); err != nil {
		return nil, err
	}
	c.hold(inst, true)
	// A register cut off mid-flight could still be run by the server after Remove's
	// deregister: when ctx ends first, it runs on until the server answers, and
	// Remove waits for it.
	_, err = inflight.Run(ctx, &c.puts, putKey(inst), c.spawnWrite, fmt.Errorf("nacos: put %s: %w", inst, driver.ErrClosed),
		func() (struct{}, error) {
			rctx, cancel := inflight.Detach(ctx, c.life, inflight.Grace)
			defer cancel()
			return struct{}{}, c.register(rctx, api, inst)
		})
	if err != nil {
		return nil, wrap("register "+inst.String(), err)
	}
	lctx, cancel := context.WithCancel(c.life)
	l := &lease{c: c, inst: inst, api: api, put: time.Now(), cancel: cancel,
		stopped: make(chan struct{})}
	c.wg.Add(1)
	go func() {
		defer c.wg.Done()
		defer close(l.stopped)
		l.keep(lctx)
	}()
	return l, nil
}

// Lost is closed when the server dropped, or may have dropped, the instance.
func (l *lease) Lost() <-chan struct{} { return l.sig.Lost() }

// Err says why Lost was closed.
func (l *lease) Err() error { return l.sig.Err() }

func (l *lease) lose(err error) { l.sig.Lose(err) }

// Abandon stops the keep-alive without touching the server. Idempotent.
func (l *lease) Abandon() {
	l.cancel()
	<-l.stopped
}

// Deregister stops the keep-alive and deletes the instance, unless another
// client's registration holds its ip:port now.
func (l *lease) Deregister(ctx context.Context) error {
	l.Abandon()
	l.c.hold(l.inst, false)
	if ok, err := l.c.ours(ctx, l.api, l.inst); err != nil || !ok {
		if err != nil {
			return wrap("deregister "+l.inst.String(), err)
		}
		return nil
	}
	if err := l.c.deregister(ctx, l.api, l.inst); err != nil {
		return wrap("deregister "+l.inst.String(), err)
	}
	return nil
}

// keep beats (ephemeral instances) and checks presence until ctx ends or the
// instance is lost.
func (l *lease) keep(ctx context.Context) {
	c := l.c
	beatEvery := c.o.beatInterval
	if beatEvery == 0 {
		beatEvery = DefaultBeatInterval
	}
	var beatC, checkC <-chan time.Time
	var beatT, checkT *time.Timer
	if c.o.ephemeral {
		beatT = time.NewTimer(beatEvery)
		defer beatT.Stop()
		beatC = beatT.C
	}
	if c.o.presenceCheck > 0 {
		checkT = time.NewTimer(c.o.presenceCheck)
		defer checkT.Stop()
		checkC = checkT.C
	}
	seen := false
	for {
		select {
		case <-ctx.Done():
			return
		case <-beatC:
			rctx, cancel := context.WithTimeout(ctx, c.o.timeout)
			unknown, interval, err := c.beat(rctx, l.api, l.inst)
			cancel()
			if ctx.Err() != nil {
				return
			}
			if unknown {
				l.lose(fmt.Errorf("nacos: heartbeat of %s: server does not know the instance: %w", l.inst, driver.ErrSessionLost))
				return
			}
			if isGone(err) {
				// The server no longer serves this API (upgraded or replaced behind
				// the address): register again, with the API probed anew.
				l.lose(fmt.Errorf("nacos: heartbeat of %s: %w: %w", l.inst, err, driver.ErrSessionLost))
				return
			}
			if err != nil {
				c.log.Warn("nacos: heartbeat failed", "instance", l.inst.String(), "err", err)
			}
			if interval > 0 && c.o.beatInterval == 0 {
				beatEvery = interval
			}
			beatT.Reset(beatEvery)
		case <-checkC:
			rctx, cancel := context.WithTimeout(ctx, c.o.timeout)
			present, rival, taker, err := l.present(rctx)
			cancel()
			if ctx.Err() != nil {
				return
			}
			if err == nil && taker != "" {
				// Another registration was put at our ip:port#cluster since: the
				// entry is its now. Step back (its put back waits until the
				// address is free) instead of taking the entry back.
				l.lose(fmt.Errorf("nacos: %s: its address is held by another registration (%s): %w", l.inst, taker, driver.ErrExists))
				return
			}
			if err == nil && rival != "" {
				// Two owners raced past Put's check; the one listings show keeps
				// the ID, and this one steps back (removing its entry) and reports it.
				rctx, cancel := context.WithTimeout(ctx, c.o.timeout)
				_ = c.deregister(rctx, l.api, l.inst)
				cancel()
				l.lose(fmt.Errorf("nacos: %s: the instance ID is held by another owner (%s): %w", l.inst, rival, driver.ErrExists))
				return
			}
			if isGone(err) {
				l.lose(fmt.Errorf("nacos: presence check of %s: %w: %w", l.inst, err, driver.ErrSessionLost))
				return
			}
			if err == nil {
				if present {
					seen = true
				} else if seen || time.Since(l.put) > l.grace() {
					l.lose(fmt.Errorf("nacos: %s is no longer listed by the server: %w", l.inst, driver.ErrSessionLost))
					return
				}
			}
			checkT.Reset(c.o.presenceCheck)
		}
	}
}

// grace is how long a new instance may stay unlisted (servers list from a cache).
func (l *lease) grace() time.Duration {
	return max(2*time.Second, 2*l.c.cacheMillis(l.inst.Service))
}

// present reports whether the server lists the instance's ip:port#cluster as
// ours; names the rival when the entry listings show for the instance's ID (see
// toListing) is another owner's; and names the taker when the entry at our
// ip:port#cluster carries another regkit owner's token (another registration was
// put at the address since).
func (l *lease) present(ctx context.Context) (present bool, rival, taker string, err error) {
	raw, err := l.c.listRaw(ctx, l.api, l.inst.Service)
	if err != nil {
		return false, "", "", err
	}
	if h, ok := l.c.atAddress(raw, l.inst); ok {
		switch o := h.Metadata[MetaOwner]; o {
		case "", l.c.owner:
			present = true
		default:
			id := h.Metadata[MetaID]
			if id == "" {
				id = net.JoinHostPort(h.IP, strconv.Itoa(h.Port))
			}
			taker = "instance id " + strconv.Quote(id) + " of owner " + o
		}
	}
	for _, in := range l.c.toListing(l.inst.Service, raw).Instances {
		if in.ID == l.inst.ID && in.Addr() != l.inst.Addr() {
			rival = "at " + in.Addr()
		}
	}
	return present, rival, taker, nil
}

// atAddress returns the host of a list that is inst's Nacos instance: the same
// ip, port and cluster.
func (c *Conn) atAddress(raw rawList, inst driver.Instance) (host, bool) {
	for _, h := range raw.hosts {
		if h.IP == inst.Host && h.Port == inst.Port && h.ClusterName == c.clusterOf(inst) {
			return h, true
		}
	}
	return host{}, false
}

// hold records (on) or forgets (off) that this Conn has put inst.
func (c *Conn) hold(inst driver.Instance, on bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if on {
		c.held[putKey(inst)] = true
	} else {
		delete(c.held, putKey(inst))
	}
}

// claim fails with ErrExists when a live instance of another owner carries inst's
// ID: a listed, healthy host whose ID (regkit.id, else ip:port) is inst's and
// whose regkit.owner is not this Conn's. A put back (inst was put by this Conn
// and not deregistered since: a re-put after a lost lease, an Update) also fails
// with ErrExists when a healthy host at inst's ip:port#cluster carries another
// regkit owner's token: it never takes the address back from the registration
// put there since. Nacos has no compare-and-set: two clients checking at the
// same moment can both pass, and the server may list from a cache (see the
// package doc, Ownership).
func (c *Conn) claim(ctx context.Context, api string, inst driver.Instance) error {
	raw, err := c.listRaw(ctx, api, inst.Service)
	if err != nil {
		c.gone(err)
		return wrap("register "+inst.String()+": check the owner", err)
	}
	c.mu.Lock()
	back := c.held[putKey(inst)]
	c.mu.Unlock()
	if h, ok := c.atAddress(raw, inst); ok && back && h.Healthy {
		if o := h.Metadata[MetaOwner]; o != "" && o != c.owner {
			return fmt.Errorf("nacos: register %s again: its address is held by another registration (instance id %q of owner %s): %w",
				inst, h.Metadata[MetaID], o, driver.ErrExists)
		}
	}
	for _, h := range raw.hosts {
		in, why := convert(inst.Service, h)
		if why != "" || in.ID != inst.ID || !h.Healthy || h.Metadata[MetaOwner] == c.owner {
			continue
		}
		who := "owner " + h.Metadata[MetaOwner]
		if h.Metadata[MetaOwner] == "" {
			who = "a client other than regkit"
		}
		return fmt.Errorf("nacos: register %s: the instance ID is held by another owner (%s at %s): %w",
			inst, who, net.JoinHostPort(h.IP, strconv.Itoa(h.Port)), driver.ErrExists)
	}
	return nil
}

// ours reports whether the server's instance at inst's ip:port#cluster is
// inst's (or absent, or written without an owner token), so that a deregister
// never removes an instance another client registered there since, nor one this
// Conn put there since under another ID that it still holds (one Client moving
// an address from one ID to another, the new registration first).
func (c *Conn) ours(ctx context.Context, api string, inst driver.Instance) (bool, error) {
	raw, err := c.listRaw(ctx, api, inst.Service)
	if err != nil {
		c.gone(err)
		if isGone(err) {
			return true, nil
		}
		return false, err
	}
	for _, h := range raw.hosts {
		if h.IP == inst.Host && h.Port == inst.Port && h.ClusterName == c.clusterOf(inst) {
			switch o := h.Metadata[MetaOwner]; {
			case o == "":
				return true, nil
			case o != c.owner:
				return false, nil
			}
			id := h.Metadata[MetaID]
			if id == "" {
				id = net.JoinHostPort(h.IP, strconv.Itoa(h.Port))
			}
			if id == inst.ID {
				return true, nil
			}
			c.mu.Lock()
			other := c.held[putKey(driver.Instance{Service: inst.Service, ID: id})]
			c.mu.Unlock()
			return !other, nil
		}
	}
	return true, nil
}

var _ driver.Remover = (*Conn)(nil)

// Remove deregisters inst, once the server has answered every register of it that
// an abandoned Put left running.
func (c *Conn) Remove(ctx context.Context, inst driver.Instance) error {
	if err := c.puts.Wait(ctx, putKey(inst)); err != nil {
		return wrap("remove "+inst.String(), err)
	}
	api, err := c.currentAPI(ctx)
	if err != nil {
		return err
	}
	c.hold(inst, false)
	if ok, err := c.ours(ctx, api, inst); err != nil || !ok {
		if err != nil {
			return wrap("remove "+inst.String(), err)
		}
		return nil
	}
	if err := c.deregister(ctx, api, inst); err != nil && !isGone(err) {
		return wrap("remove "+inst.String(), err)
	}
	return nil
}

// putKey names inst in the Conn's set of running registers.
func putKey(inst driver.Instance) string { return inst.Service + "/" + inst.ID }

// spawnWrite runs f on a goroutine Close waits for, or reports false once the Conn
// is closing.
func (c *Conn) spawnWrite(f func()) bool { return c.writes.Go(f) }

var _ driver.Updater = (*Conn)(nil)

// Update changes the instance old keeps to inst. Nacos names an instance by its
// ip:port and cluster, so a new Host, Port or Zone is another instance on the
// server: Update registers inst first, then deregisters the old address (if it is
// still this Conn's), so readers see the old entry, then both for a moment, then
// the new one, never none. When the old address cannot be deregistered, Update
// deregisters inst again (best effort), keeps old in force and returns the error.
// When the address is unchanged, the register overwrites the entry in place.
func (c *Conn) Update(ctx context.Context, old driver.Lease, inst driver.Instance) (driver.Lease, error) {
	ol, ok := old.(*lease)
	if !ok || ol.c != c {
		return nil, fmt.Errorf("nacos: update %s: the lease is not this Conn's", inst)
	}
	nl, err := c.Put(ctx, inst)
	if err != nil {
		return nil, err
	}
	prev := ol.inst
	if prev.Host == inst.Host && prev.Port == inst.Port && c.clusterOf(prev) == c.clusterOf(inst) {
		ol.Abandon()
		return nl, nil
	}
	api := nl.(*lease).api
	err = func() error {
		mine, err := c.ours(ctx, api, prev)
		if err != nil || !mine {
			return err
		}
		if err := c.deregister(ctx, api, prev); err != nil && !isGone(err) {
			return err
		}
		return nil
	}()
	if err != nil {
		nl.Abandon()
		rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), c.o.timeout)
		defer cancel()
		_ = c.deregister(rctx, api, inst)
		return nil, wrap("update "+inst.String()+": deregister the old address "+prev.Addr(), err)
	}
	ol.Abandon()
	return nl, nil
}
