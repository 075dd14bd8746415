package main

import "runtime"

// oneProcessor runs the Go scheduler on one processor unless GOMAXPROCS
// says otherwise. The connector's work is handing packets between a few
// goroutines (UDP, wireguard-go's pipeline, gVisor, yamux, the service's
// socket); with more processors the scheduler wakes idle threads for each
// hand-off. In BenchmarkPath (bench/README.md, 2026-12-05 05:50 and 05:56)
// one processor cut the connector's CPU by a third per GiB (9.2-9.6 s ->
// 6.2-6.5 s) and by a sixth per new connection, its throughput no lower,
// and one processor encrypts far faster than a cellular link carries.
func oneProcessor(getenv func(string) string) {
	if getenv("GOMAXPROCS") == "" {
		runtime.GOMAXPROCS(1)
	}
}
