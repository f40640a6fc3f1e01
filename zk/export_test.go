package zk

import "time"

// SessionCred is the id and password of one live ZooKeeper session, for tests
// that expire it the way Curator's KillSession does.
type SessionCred struct {
	ID     int64
	Passwd []byte
}

// SessionCreds returns the sessions of c: the registration connection's and every
// open store session's.
func SessionCreds(c *Conn) []SessionCred {
	var out []SessionCred
	if id, pw := c.zc.session(); id != 0 {
		out = append(out, SessionCred{id, pw})
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	for s := range c.sessions {
		if id, pw := s.zc.session(); id != 0 {
			out = append(out, SessionCred{id, pw})
		}
	}
	return out
}

// HoldOwnCreate makes c's subscriptions of service see an own create under way
// (their directory's re-arm deferred) until the returned func is called.
func HoldOwnCreate(c *Conn, service string) func() {
	dir := c.codec().dir(service)
	c.hub.putStart(dir)
	return func() { c.hub.putDone(dir, "", false) }
}

// SetOwnMaxDefer sets the longest deferral of a re-arm for the Conns opened
// until the returned func restores it.
func SetOwnMaxDefer(d time.Duration) func() {
	old := ownMaxDefer
	ownMaxDefer = d
	return func() { ownMaxDefer = old }
}
