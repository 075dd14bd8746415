// Package bench measures what the Fieldpass path costs, each figure beside
// its baseline in the same run (these machines are shared and noisy: compare
// ratios, never an absolute figure from another day; see README.md beside
// this file). It has no code of its own: everything is in its
// tests, against a real Postgres (postgres/pgtest), a real broker and real
// connectors on loopback. Every figure is a b.ReportMetric, and each
// benchmark logs a summary line to copy into a note.
//
// Two benchmarks take seconds and run the broker and the connector in the
// test process:
//
//   - BenchmarkThroughput: one stream, engineer->device and device->engineer,
//     64 MiB per op (FIELDPASS_BENCH_MIB), from the stream that
//     broker.OpenStream returns ("direct") or through a loopback TCP hop in
//     front of it ("tcp-hop", as an engineer's connection reaches the
//     broker), to a TCP sink or source beside the connector; each op also
//     moves the same bytes over plain loopback TCP to the same sink or
//     source. Reports MB/s (10^6 bytes) of both, their ratio, and the CPU
//     the process used meanwhile (both ends share it).
//   - BenchmarkStreamOpen: OpenStream + 1-byte echo + close, 1000 times per
//     op (FIELDPASS_BENCH_STREAMS), interleaved with the same through a TCP
//     hop and with a loopback TCP connect + 1-byte echo + close to the same
//     echo server; p50/p99 in µs.
//
// Run them with
//
//	go test -run '^$' -bench . -benchtime 3x ./bench/
//
// Three take minutes, and run only with FIELDPASS_BENCH=1 (skipped
// otherwise), once, with -benchtime 1x:
//
//   - BenchmarkPath builds the three binaries and runs the person's whole
//     path, each in its own process: fieldpass forward -> the broker over
//     HTTPS -> WireGuard -> the connector -> a target in the test process.
//     It reports one stream's MB/s each way, CPU seconds per GiB and RSS of
//     each process, new connection + 1-byte echo p50/p99 and 200 at once,
//     beside raw loopback to the same target; other builds
//     (FIELDPASS_BENCH_BEFORE) and chisel (FIELDPASS_BENCH_CHISEL) in the
//     same run. About 3 minutes per build; make bench runs it.
//   - BenchmarkFleet builds and runs the real fieldpass-broker binary (its
//     own process, so its RSS is its own) and connects
//     FIELDPASS_BENCH_DEVICES (default 1000) simulated devices from the test
//     process, each a full connector with its own key, netstack and UDP
//     socket. After FIELDPASS_BENCH_SETTLE (default 150 s) it reports the
//     broker's RSS per idle connected device (median over a 30 s window,
//     FIELDPASS_BENCH_WINDOW), the broker's CPU over that window, and the
//     simulator's own memory per device. About 4 minutes.
//   - BenchmarkIdleWire puts a counting UDP relay between one connector and
//     the broker and reports the idle bytes on the wire (IPv4+UDP headers
//     included) per WireGuard message type, extrapolated to a day and a
//     month. The window is FIELDPASS_BENCH_IDLE (default 6m, so that it
//     holds WireGuard's rekeys every 120 s); the keepalive is
//     FIELDPASS_BENCH_KEEPALIVE (default 25s; another value is set for the
//     device on the broker, as fieldpass-broker device keepalive does).
//
// Run them with
//
//	FIELDPASS_BENCH=1 go test -run '^$' -bench 'Path|Fleet|IdleWire' -benchtime 1x -timeout 30m ./bench/
//
// README.md beside this file has the figures measured so far.
package bench
