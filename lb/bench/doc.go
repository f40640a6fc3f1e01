// Package bench compares lb's pickers with grpc-go's round_robin picker and
// go-kit's lb.NewRoundRobin in one run. It is a module of its own,
// github.com/regkit/regkit/lb/bench, outside go.work, so that go-kit and its
// dependencies never reach regkit's module graph:
//
//	cd lb/bench && GOWORK=off go test -run '^$' -bench Pick -benchmem -count 6 . | benchstat -
package bench
