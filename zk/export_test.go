package zk

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
