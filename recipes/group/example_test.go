package group_test

import (
	"context"
	"fmt"
	"log"
	"maps"
	"slices"

	_ "github.com/regkit/regkit/mem"
	"github.com/regkit/regkit/recipes/group"
	"github.com/regkit/regkit/registry"
)

// Members join a group with a value; anyone can list or watch the group. A
// member leaves when closed, or when its session ends with its process.
func ExampleMember() {
	ctx := context.Background()
	c, err := registry.Open(ctx, "mem://example-group")
	if err != nil {
		log.Fatal(err)
	}
	defer c.Close()
	var members []*group.Member
	for _, id := range []string{"worker-1", "worker-2"} {
		m, err := group.NewMember(c, "/groups/workers", id, []byte("zone-a"))
		if err != nil {
			log.Fatal(err)
		}
		if err := m.WaitForJoin(ctx); err != nil {
			log.Fatal(err)
		}
		members = append(members, m)
	}
	all, err := group.Members(ctx, c, "/groups/workers")
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println(slices.Sorted(maps.Keys(all)), string(all["worker-1"]))
	if err := members[0].Close(); err != nil {
		log.Fatal(err)
	}
	all, err = group.Members(ctx, c, "/groups/workers")
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println(slices.Sorted(maps.Keys(all)))
	_ = members[1].Close()
	// Output:
	// [worker-1 worker-2] zone-a
	// [worker-2]
}
