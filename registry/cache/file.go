package cache

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/regkit/regkit/registry"
	"github.com/regkit/regkit/registry/driver"
)

// fileSnapshot is the JSON form of a persisted snapshot.
type fileSnapshot struct {
	Service   string            `json:"service"`
	Saved     time.Time         `json:"saved"` // the snapshot's LastGood
	Revision  uint64            `json:"revision"`
	Instances []driver.Instance `json:"instances"`
}

// filePath names the file of service; ':' (allowed in service names) is escaped
// for file systems that reject it.
func (c *Cache) filePath(service string) string {
	return filepath.Join(c.opt.dir, strings.ReplaceAll(service, ":", "%3A")+".json")
}

// saveFile writes s atomically: a temporary file in the same directory, renamed.
func (c *Cache) saveFile(s registry.Snapshot) error {
	saved := s.LastGood
	if saved.IsZero() {
		saved = time.Now()
	}
	data, err := json.Marshal(fileSnapshot{Service: s.Service, Saved: saved, Revision: s.Revision, Instances: s.Instances})
	if err != nil {
		return err
	}
	f, err := os.CreateTemp(c.opt.dir, ".snapshot-*.tmp")
	if err != nil {
		return err
	}
	tmp := f.Name()
	_, err = f.Write(data)
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp, c.filePath(s.Service))
	}
	if err != nil {
		os.Remove(tmp)
	}
	return err
}

// loadFile reads the persisted snapshot of service, marked Stale.
func (c *Cache) loadFile(service string) (*registry.Snapshot, error) {
	data, err := os.ReadFile(c.filePath(service))
	if err != nil {
		return nil, err
	}
	var f fileSnapshot
	if err := json.Unmarshal(data, &f); err != nil {
		return nil, fmt.Errorf("%s: %w", c.filePath(service), err)
	}
	if f.Service != service {
		return nil, fmt.Errorf("%s: holds service %q", c.filePath(service), f.Service)
	}
	// The file may have been edited or written by another version: serve only
	// valid instances of this service, one per ID.
	insts := make([]driver.Instance, 0, len(f.Instances))
	seen := make(map[string]bool, len(f.Instances))
	skipped := 0
	for _, in := range f.Instances {
		if in.Service != service || in.Validate() != nil || seen[in.ID] {
			skipped++
			continue
		}
		seen[in.ID] = true
		insts = append(insts, in)
	}
	if skipped > 0 && c.log != nil {
		c.log.Warn("cache: snapshot file holds entries that are not valid instances of its service; skipped",
			"file", c.filePath(service), "skipped", skipped)
	}
	driver.SortInstances(insts)
	return &registry.Snapshot{Service: service, Instances: insts, Revision: f.Revision,
		Stale: true, Err: errNoAnswer, LastGood: f.Saved}, nil
}
