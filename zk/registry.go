package zk

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"

	"github.com/go-zookeeper/zk"
	"github.com/regkit/regkit/internal/inflight"
	"github.com/regkit/regkit/registry/driver"
)

// Put creates the instance's ephemeral node in the current session (setting the
// data of a node of the same ID the session already owns; a node of another
// session fails the put with ErrExists) and returns a Lease that reports Lost when that
// session is gone.
func (c *Conn) Put(ctx context.Context, inst driver.Instance) (driver.Lease, error) {
	cd := c.codec()
	if cc, ok := cd.(curatorCodec); ok && cc.payload == PayloadAuto {
		p, err := c.resolveAutoPayload(ctx, cc, inst)
		if err != nil {
			return nil, err
		}
		cc.payload = p
		cd = cc
	}
	name, data, err := cd.encode(inst)
	if err != nil {
		return nil, fmt.Errorf("zk: encode %s: %w: %w", inst, driver.ErrInvalid, err)
	}
	dir := cd.dir(inst.Service)
	path := dir + "/" + name
	if !cd.byName() {
		// The node's name is not the ID (Dubbo URLs): a node of another session
		// carrying the ID holds it. Checked before the create, so two sessions
		// racing here can both pass (see the package doc, Ownership).
		nodes, err := c.sameID(ctx, cd, inst)
		if err != nil {
			return nil, err
		}
		_, sid, _ := c.zc.status()
		for _, n := range nodes {
			if n.name != name && (sid == 0 || n.owner != sid) {
				return nil, fmt.Errorf("zk: put %s: the instance ID is held by another owner (node %s, session %x): %w",
					inst, n.name, n.owner, driver.ErrExists)
			}
		}
	}
	// ep is the session the node is bound to, known without reading the node
	// back: the session current before a successful create (a create applied in a
	// later session only makes the lease report Lost at once, and the instance is
	// put again), or the owner read from the node's stat before a set.
	var ep *epoch
	for attempt := 0; ; attempt++ {
		if err := ctx.Err(); err != nil {
			return nil, wrap("put", path, err)
		}
		before := c.zc.currentEpoch()
		_, err := mutate(ctx, c, inst, func() (string, error) {
			if !cd.byName() {
				return c.zc.zk.Create(path, data, zk.FlagEphemeral, c.cfg.acl)
			}
			// The subscriptions of dir defer their re-arm while own creates
			// are under way (see eventHub.putStart).
			c.hub.putStart(dir)
			p, err := c.zc.zk.Create(path, data, zk.FlagEphemeral, c.cfg.acl)
			c.hub.putDone(dir, name, err == nil)
			return p, err
		})
		switch {
		case err == nil:
			ep = before
		case errors.Is(err, zk.ErrNoNode):
			if err := c.ensureServiceDir(ctx, cd, dir); err != nil {
				return nil, err
			}
			continue
		case errors.Is(err, zk.ErrNodeExists):
			st, err := c.exists(ctx, path)
			if errors.Is(err, zk.ErrNoNode) {
				continue
			}
			if err != nil {
				return nil, wrap("put", path, err)
			}
			if _, sid, _ := c.zc.status(); st.EphemeralOwner == sid && sid != 0 { // ours (a retried create, or a re-put): update
				if _, err := mutate(ctx, c, inst, func() (*zk.Stat, error) { return c.zc.zk.Set(path, data, -1) }); err != nil {
					if errors.Is(err, zk.ErrNoNode) {
						continue
					}
					return nil, wrap("put", path, err)
				}
				ep = c.zc.epochFor(st.EphemeralOwner)
				break
			}
			// Another session's node (another client's live registration, or a
			// persistent node another program wrote): not ours to replace.
			return nil, fmt.Errorf("zk: put %s: the instance ID is held by another owner (session %x): %w",
				path, st.EphemeralOwner, driver.ErrExists)
		case isConnLoss(err) && attempt < 5:
			// The create may have been applied: the next attempt finds it as ours.
			continue
		default:
			return nil, wrap("put", path, err)
		}
		break
	}
	if !cd.byName() {
		// Two sessions can both pass the check before the create (above): each
		// looks again now, and the later node steps back. The later create sees
		// the earlier node (its own write is applied before it lists), so at
		// most one of two racing Puts keeps the ID.
		if err := c.yieldToEarlier(ctx, cd, inst, path, name); err != nil {
			return nil, err
		}
		// The node's name changes with the data (Dubbo URLs): the new node is
		// created before the old ones of this ID are deleted, so that the
		// instance never disappears from a watcher's view during a re-put.
		if err := c.deleteSameID(ctx, cd, inst, name); err != nil {
			return nil, err
		}
	}
	if ep == nil { // no session was known before the create: read the owner
		st, err := c.exists(ctx, path)
		if err != nil {
			return nil, wrap("put", path, err)
		}
		ep = c.zc.epochFor(st.EphemeralOwner)
	}
	return &regLease{c: c, cd: cd, inst: inst, path: path, ep: ep}, nil
}

// exists returns the stat of path, zk.ErrNoNode if it does not exist.
func (c *Conn) exists(ctx context.Context, path string) (*zk.Stat, error) {
	st, err := call(ctx, c, func() (*zk.Stat, error) {
		ok, st, err := c.zc.zk.Exists(path)
		if err == nil && !ok {
			err = zk.ErrNoNode
		}
		return st, err
	})
	return st, err
}

func (c *Conn) del(ctx context.Context, path string, version int32) error {
	_, err := call(ctx, c, func() (struct{}, error) { return struct{}{}, c.zc.zk.Delete(path, version) })
	return err
}

// ensurePath creates path and its missing ancestors as empty persistent nodes.
func (c *Conn) ensurePath(ctx context.Context, zc *zkConn, path string) error {
	if path == "/" || path == "" {
		return nil
	}
	_, err := call(ctx, c, func() (string, error) { return zc.zk.Create(path, nil, 0, c.cfg.acl) })
	switch {
	case err == nil, errors.Is(err, zk.ErrNodeExists):
		return nil
	case errors.Is(err, zk.ErrNoNode):
		if err := c.ensurePath(ctx, zc, driver.ParentKey(path)); err != nil {
			return err
		}
		return c.ensurePath(ctx, zc, path)
	}
	return wrap("create parent", path, err)
}

// ensureServiceDir creates a service's directory and its missing ancestors. In the
// regkit and curator layouts the directory is a container node (ZooKeeper 3.5+),
// which the server deletes once its last instance is gone, as Curator's
// creatingParentContainersIfNeeded does; the ancestors, and Dubbo's directories
// (Dubbo creates them persistent), are persistent. A container deleted between
// this and the instance's create makes that create fail with NoNode, and Put
// comes back here.
func (c *Conn) ensureServiceDir(ctx context.Context, cd codec, dir string) error {
	if !cd.byName() {
		return c.ensurePath(ctx, c.zc, dir)
	}
	for attempt := 0; ; attempt++ {
		_, err := call(ctx, c, func() (string, error) { return c.zc.zk.CreateContainer(dir, nil, zk.FlagContainer, c.cfg.acl) })
		switch {
		case err == nil, errors.Is(err, zk.ErrNodeExists):
			return nil
		case errors.Is(err, zk.ErrNoNode) && attempt < 5:
			if err := c.ensurePath(ctx, c.zc, driver.ParentKey(dir)); err != nil {
				return err
			}
			continue
		}
		return wrap("create container", dir, err)
	}
}

// idNode is one node of a service directory that decodes to a given instance ID.
type idNode struct {
	name    string
	owner   int64 // the session of an ephemeral node, 0 for a persistent one
	version int32
	czxid   int64 // the zxid of its create: which of two nodes came first
}

// sameID returns the nodes of inst's directory that decode to inst's ID, with
// their owners (the dubbo layout, where node names are not IDs).
func (c *Conn) sameID(ctx context.Context, cd codec, inst driver.Instance) ([]idNode, error) {
	dir := cd.dir(inst.Service)
	kids, err := call(ctx, c, func() ([]string, error) {
		kids, _, err := c.zc.zk.Children(dir)
		return kids, err
	})
	if errors.Is(err, zk.ErrNoNode) {
		return nil, nil
	}
	if err != nil {
		return nil, wrap("list", dir, err)
	}
	var out []idNode
	for _, k := range kids {
		if got, why := cd.decode(inst.Service, k, nil); why != "" || got.ID != inst.ID {
			continue
		}
		st, err := c.exists(ctx, dir+"/"+k)
		if errors.Is(err, zk.ErrNoNode) {
			continue
		}
		if err != nil {
			return nil, wrap("list", dir+"/"+k, err)
		}
		out = append(out, idNode{name: k, owner: st.EphemeralOwner, version: st.Version, czxid: st.Czxid})
	}
	return out, nil
}

// yieldToEarlier deletes our just-created node name (at path) and fails with
// ErrExists when a node of another session carrying inst's ID was created
// before it (a smaller creation zxid): that session holds the ID.
func (c *Conn) yieldToEarlier(ctx context.Context, cd codec, inst driver.Instance, path, name string) error {
	nodes, err := c.sameID(ctx, cd, inst)
	if err != nil {
		return err
	}
	i := slices.IndexFunc(nodes, func(n idNode) bool { return n.name == name })
	if i < 0 {
		return nil // ours is gone already (the session ended): the lease says so
	}
	mine := nodes[i]
	for _, n := range nodes {
		if n.name == name || n.owner == mine.owner || n.czxid > mine.czxid {
			continue
		}
		if _, err := call(ctx, c, func() (struct{}, error) {
			return struct{}{}, c.zc.zk.Delete(path, mine.version)
		}); err != nil && !errors.Is(err, zk.ErrNoNode) {
			return wrap("put", path, fmt.Errorf("step back for an earlier owner of the ID: %w", err))
		}
		return fmt.Errorf("zk: put %s: the instance ID is held by another owner (node %s, session %x, created first): %w",
			inst, n.name, n.owner, driver.ErrExists)
	}
	return nil
}

// deleteSameID deletes the nodes of dir that decode to inst's ID, except keep, and
// only those of the current session: a node of another session (a Java provider
// with the same host, port, group and version, another client) is never deleted.
func (c *Conn) deleteSameID(ctx context.Context, cd codec, inst driver.Instance, keep string) error {
	nodes, err := c.sameID(ctx, cd, inst)
	if err != nil {
		return err
	}
	dir := cd.dir(inst.Service)
	for _, n := range nodes {
		if n.name == keep {
			continue
		}
		path := dir + "/" + n.name
		if _, sid, _ := c.zc.status(); sid == 0 || n.owner != sid {
			c.cfg.log.Debug("zk: keeping a node of the same ID written by another session", "path", path)
			continue
		}
		if err := c.del(ctx, path, n.version); err != nil && !errors.Is(err, zk.ErrNoNode) && !errors.Is(err, zk.ErrBadVersion) {
			return wrap("delete", path, err)
		}
	}
	return nil
}

type regLease struct {
	c    *Conn
	cd   codec
	inst driver.Instance
	path string
	ep   *epoch
}

// healthCodec is a layout whose node data can say that the instance is
// unhealthy while it stays registered: the regkit record's "healthy". Curator's
// "enabled" is not written (its compatible-mode readers, older than Curator 4,
// fail on it, and with it on every instance of the service), and Dubbo's provider
// URL is the node's name.
type healthCodec interface {
	encodeHealth(inst driver.Instance, healthy bool) ([]byte, error)
}

var _ driver.HealthSetter = (*regLease)(nil)

// SetHealthy rewrites the instance's node, if the current session owns it, with
// "healthy": false in the regkit layout's record, or without the field for
// healthy. The curator and dubbo layouts: ErrNotSupported. A node
// that is gone or another session's: ErrNotFound (the registration puts it again).
func (r *regLease) SetHealthy(ctx context.Context, healthy bool) error {
	hc, ok := r.cd.(healthCodec)
	if !ok {
		return fmt.Errorf("zk: set health of %s: the %s layout has no health field: %w", r.path, r.c.cfg.layout, driver.ErrNotSupported)
	}
	data, err := hc.encodeHealth(r.inst, healthy)
	if err != nil {
		return fmt.Errorf("zk: encode %s: %w: %w", r.inst, driver.ErrInvalid, err)
	}
	for {
		st, err := r.c.exists(ctx, r.path)
		if errors.Is(err, zk.ErrNoNode) {
			return fmt.Errorf("zk: set health of %s: %w", r.path, driver.ErrNotFound)
		}
		if err != nil {
			return wrap("set health of", r.path, err)
		}
		if _, sid, _ := r.c.zc.status(); sid == 0 || st.EphemeralOwner != sid {
			return fmt.Errorf("zk: set health of %s: the node is not this session's: %w", r.path, driver.ErrNotFound)
		}
		_, err = mutate(ctx, r.c, r.inst, func() (*zk.Stat, error) { return r.c.zc.zk.Set(r.path, data, st.Version) })
		switch {
		case err == nil:
			return nil
		case errors.Is(err, zk.ErrBadVersion): // rewritten meanwhile: look again
			continue
		case errors.Is(err, zk.ErrNoNode):
			return fmt.Errorf("zk: set health of %s: %w", r.path, driver.ErrNotFound)
		}
		return wrap("set health of", r.path, err)
	}
}

func (r *regLease) Lost() <-chan struct{} { return r.ep.sig.Lost() }
func (r *regLease) Err() error            { return r.ep.Err() }
func (r *regLease) Abandon()              {}

// Deregister deletes the instance's node (and, in the dubbo layout, any other node
// of the same ID) if the current session owns it: a node of another session (a
// client that registered the ID after ours was lost) is left alone. A node of
// this lease's own, earlier session went with that session.
func (r *regLease) Deregister(ctx context.Context) error {
	if !r.cd.byName() {
		return r.c.deleteSameID(ctx, r.cd, r.inst, "")
	}
	st, err := r.c.exists(ctx, r.path)
	if errors.Is(err, zk.ErrNoNode) {
		return nil
	}
	if err != nil {
		return wrap("deregister", r.path, err)
	}
	if _, sid, _ := r.c.zc.status(); sid == 0 || st.EphemeralOwner != sid {
		return nil
	}
	if err := r.c.del(ctx, r.path, st.Version); err != nil && !errors.Is(err, zk.ErrNoNode) {
		if errors.Is(err, zk.ErrBadVersion) { // rewritten meanwhile: by us (a set) or after a delete
			return r.Deregister(ctx)
		}
		return wrap("deregister", r.path, err)
	}
	return nil
}

// resolveAutoPayload reads the service's other instances (every node but inst's
// own) and resolves payload=auto from their payloads.
func (c *Conn) resolveAutoPayload(ctx context.Context, cc curatorCodec, inst driver.Instance) (CuratorPayload, error) {
	dir := cc.dir(inst.Service)
	kids, datas, _, err := c.readDir(ctx, dir, true)
	if errors.Is(err, zk.ErrNoNode) {
		return PayloadNull, nil
	}
	if err != nil {
		return "", err
	}
	var others [][]byte
	for i, k := range kids {
		if k != inst.ID && datas[i] != nil {
			others = append(others, datas[i])
		}
	}
	return autoPayload(others), nil
}

// readDir reads the children of dir and, with data, each child's data (nil for a
// child deleted meanwhile). A missing dir is zk.ErrNoNode; other errors are wrapped.
func (c *Conn) readDir(ctx context.Context, dir string, data bool) (kids []string, datas [][]byte, st *zk.Stat, err error) {
	type res struct {
		kids []string
		st   *zk.Stat
	}
	r, err := call(ctx, c, func() (res, error) {
		kids, st, err := c.zc.zk.Children(dir)
		return res{kids, st}, err
	})
	if errors.Is(err, zk.ErrNoNode) {
		return nil, nil, nil, err
	}
	if err != nil {
		return nil, nil, nil, wrap("list", dir, err)
	}
	datas = make([][]byte, len(r.kids))
	if data && len(r.kids) > 0 {
		// go-zookeeper pipelines requests on its connection: read the children
		// concurrently, at most 16 at a time.
		errs := make([]error, len(r.kids))
		sem := make(chan struct{}, 16)
		var wg sync.WaitGroup
		for i, k := range r.kids {
			wg.Add(1)
			sem <- struct{}{}
			go func() {
				defer wg.Done()
				defer func() { <-sem }()
				datas[i], errs[i] = call(ctx, c, func() ([]byte, error) {
					b, _, err := c.zc.zk.Get(dir + "/" + k)
					return b, err
				})
			}()
		}
		wg.Wait()
		for i, err := range errs {
			if err != nil && !errors.Is(err, zk.ErrNoNode) {
				return nil, nil, nil, wrap("list", dir+"/"+r.kids[i], err)
			}
		}
	}
	return r.kids, datas, r.st, nil
}

// List reads every instance of service. Children that are not instances of the
// connection's layout are skipped (logged at Debug).
func (c *Conn) List(ctx context.Context, service string) (driver.Listing, error) {
	cd := c.codec()
	dir := cd.dir(service)
	kids, datas, st, err := c.readDir(ctx, dir, cd.needsData())
	if errors.Is(err, zk.ErrNoNode) {
		return driver.Listing{}, nil
	}
	if err != nil {
		return driver.Listing{}, err
	}
	out := make([]driver.Instance, 0, len(kids))
	names := make([]string, 0, len(kids))
	for i, k := range kids {
		if cd.needsData() && datas[i] == nil {
			continue // deleted meanwhile
		}
		in, why := cd.decode(service, k, datas[i])
		if why != "" {
			c.skipped.Skip(dir+"/"+k, why)
			continue
		}
		out, names = append(out, in), append(names, k)
	}
	if !cd.byName() {
		out = dedupeIDs(out, names)
	}
	return driver.Listing{Instances: out, Revision: uint64(st.Pzxid)}, nil
}

// Watch follows the service directory and every instance's data.
func (c *Conn) Watch(ctx context.Context, service string, notify func()) error {
	return c.watchTree(ctx, c.codec().dir(service), 1, notify)
}

// dedupeIDs keeps one instance per ID where node names are not IDs (Dubbo URLs):
// during a re-put the new node exists beside the old one for a moment. The instance
// from the greatest node name wins (a Dubbo URL carries its timestamp); names[i] is
// the node list[i] was read from.
func dedupeIDs(list []driver.Instance, names []string) []driver.Instance {
	at := map[string]int{} // ID -> index in out
	var out []driver.Instance
	var outNames []string
	for i, in := range list {
		if k, ok := at[in.ID]; ok {
			if names[i] > outNames[k] {
				out[k], outNames[k] = in, names[i]
			}
			continue
		}
		at[in.ID] = len(out)
		out, outNames = append(out, in), append(outNames, names[i])
	}
	return out
}

var _ driver.Remover = (*Conn)(nil)

// Remove deletes inst's nodes that the current session owns, once every create and
// set an abandoned Put of inst left on the connection has been answered: ZooKeeper
// applies one session's requests in order, so the delete comes after them. A node of
// an earlier session went with that session.
func (c *Conn) Remove(ctx context.Context, inst driver.Instance) error {
	if err := c.puts.Wait(ctx, putKey(inst)); err != nil {
		return wrap("remove", inst.String(), err)
	}
	cd := c.codec()
	dir := cd.dir(inst.Service)
	var paths []string
	if cd.byName() {
		name, _, err := cd.encode(inst)
		if err != nil {
			return nil // never put
		}
		paths = []string{dir + "/" + name}
	} else { // the node name carries the put's time: find the nodes of this ID
		kids, err := call(ctx, c, func() ([]string, error) {
			kids, _, err := c.zc.zk.Children(dir)
			return kids, err
		})
		if errors.Is(err, zk.ErrNoNode) {
			return nil
		}
		if err != nil {
			return wrap("remove: list", dir, err)
		}
		for _, k := range kids {
			if got, why := cd.decode(inst.Service, k, nil); why == "" && got.ID == inst.ID {
				paths = append(paths, dir+"/"+k)
			}
		}
	}
	_, sid, _ := c.zc.status()
	for _, p := range paths {
		st, err := c.exists(ctx, p)
		if errors.Is(err, zk.ErrNoNode) {
			continue
		}
		if err != nil {
			return wrap("remove", p, err)
		}
		if sid == 0 || st.EphemeralOwner != sid {
			continue // another session's: not this Conn's to remove
		}
		if err := c.del(ctx, p, -1); err != nil && !errors.Is(err, zk.ErrNoNode) {
			return wrap("remove", p, err)
		}
	}
	return nil
}

// putKey names inst in the Conn's set of running Put requests.
func putKey(inst driver.Instance) string { return inst.Service + "/" + inst.ID }

// mutate is call for a create or set of inst's node: the request is counted until
// go-zookeeper answers it, even after ctx ended, so that Remove can wait for it.
func mutate[T any](ctx context.Context, c *Conn, inst driver.Instance, f func() (T, error)) (T, error) {
	return inflight.Run(ctx, &c.puts, putKey(inst), c.spawn, fmt.Errorf("connection closed: %w", driver.ErrClosed), f)
}
