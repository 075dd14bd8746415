//go:build linux

package e2e_test

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net"
	"os"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"
)

// The field benchmark: the person's path (`fieldpass forward` → broker →
// WireGuard → connector → service) across a carrier shaped like a cellular
// link, each figure beside raw TCP across the same carrier in the same run.
// Run with make bench-field; bench/README.md records the figures.

// fieldLinkRate is the carrier's rate each way, as `tc ... tbf rate` reads it.
const fieldLinkRate = "20mbit"

// fieldQueue is the most the carrier's queue holds each way, as tbf's
// latency: a packet that would wait longer is dropped at its tail.
const fieldQueue = "50ms"

// shapeCarrier limits what the carrier forwards each way to fieldLinkRate
// with a token bucket on both of its egresses: towards the internet (wan)
// and towards the device (its bridge port). There is no netem here; tbf
// is what the kernel has.
func shapeCarrier(t testing.TB, d *fieldDevice) {
	t.Helper()
	for _, dev := range []string{"wan", "d" + strconv.Itoa(d.n)} {
		mustRun(t, "tc", "-n", string(d.f.carrier), "qdisc", "replace", "dev", dev, "root",
			"tbf", "rate", fieldLinkRate, "burst", "16kb", "latency", fieldQueue)
	}
}

// tbfDrops is what the carrier's shapers dropped so far (tail drops of a
// full queue), both ways together.
func tbfDrops(t testing.TB, d *fieldDevice) int64 {
	t.Helper()
	var n int64
	for _, dev := range []string{"wan", "d" + strconv.Itoa(d.n)} {
		out := mustRun(t, "tc", "-s", "-n", string(d.f.carrier), "qdisc", "show", "dev", dev)
		if i := strings.Index(out, "dropped "); i >= 0 {
			f := strings.FieldsFunc(out[i+len("dropped "):], func(r rune) bool { return r == ',' || r == ' ' })
			if len(f) > 0 {
				v, _ := strconv.ParseInt(f[0], 10, 64)
				n += v
			}
		}
	}
	return n
}

// rawPeer is the baseline: services in the engineer's namespace that the
// device reaches with plain TCP across the same carrier (the device is
// behind the carrier's NAT, so it dials). Upload and download keep the
// person's sense: up is engineer → device.
type rawPeer struct {
	echo, source, sink string // addresses in the engineer's namespace
	sunk               chan xferResult
}

func newRawPeer(t *testing.T, f *fieldNet) *rawPeer {
	r := &rawPeer{sunk: make(chan xferResult, 4)}
	ln := f.eng.listen(t, "tcp", engineerIP+":0")
	go serveConns(ln, echo)
	r.echo = ln.Addr().String()
	ln = f.eng.listen(t, "tcp", engineerIP+":0")
	go serveConns(ln, func(c net.Conn) {
		if n, err := readLength(c); err == nil {
			sendPattern(c, n)
		}
	})
	r.source = ln.Addr().String()
	ln = f.eng.listen(t, "tcp", engineerIP+":0")
	go serveConns(ln, func(c net.Conn) {
		var x xfer
		n, err := readLength(c)
		if err == nil {
			x, err = receivePattern(c, n)
		}
		if err == nil {
			_, err = c.Write([]byte{'k'})
		}
		r.sunk <- xferResult{x, err}
	})
	r.sink = ln.Addr().String()
	return r
}

// upload: the engineer's side sends n bytes to the device.
func (r *rawPeer) upload(t *testing.T, d *fieldDevice, n int64) xfer {
	t.Helper()
	c, err := d.ns.dial(context.Background(), "tcp", r.source)
	if err != nil {
		t.Fatalf("raw upload: %v", err)
	}
	defer c.Close()
	start := time.Now()
	if err := writeLength(c, n); err != nil {
		t.Fatalf("raw upload: %v", err)
	}
	x, err := receivePattern(c, n)
	if err != nil {
		t.Fatalf("raw upload: %v", err)
	}
	x.took = x.last.Sub(start)
	return x
}

// download: the device sends n bytes to the engineer's side.
func (r *rawPeer) download(t *testing.T, d *fieldDevice, n int64) xfer {
	t.Helper()
	c, err := d.ns.dial(context.Background(), "tcp", r.sink)
	if err != nil {
		t.Fatalf("raw download: %v", err)
	}
	defer c.Close()
	start := time.Now()
	go func() {
		if err := writeLength(c, n); err == nil {
			sendPattern(c, n)
		}
	}()
	res := <-r.sunk
	if res.err != nil {
		t.Fatalf("raw download: %v", res.err)
	}
	res.took = res.last.Sub(start)
	return res.xfer
}

// benchFigures is one path's figures under one condition.
type benchFigures struct {
	up, down   []xfer
	opens      []time.Duration // new connection + 1-byte echo
	echoes     []time.Duration // 64-byte echo every 40 ms during an upload
	echoUpload xfer            // the upload the echoes ran beside
}

func medianRate(xs []xfer) float64 {
	r := make([]float64, len(xs))
	for i, x := range xs {
		r[i] = float64(x.bytes) / 1e6 / x.took.Seconds()
	}
	slices.Sort(r)
	return r[len(r)/2]
}

// echoDuringBulk sends 64 bytes every 40 ms on the open connection c and
// times each echo, from a second after upload starts until it returns.
func echoDuringBulk(t *testing.T, c net.Conn, upload func() xfer) (echoes []time.Duration, up xfer) {
	t.Helper()
	stop := make(chan struct{})
	type result struct {
		echoes []time.Duration
		err    error
	}
	res := make(chan result, 1)
	go func() {
		var r result
		defer func() { res <- r }()
		// Let the transfer fill whatever it fills first.
		select {
		case <-stop:
			return
		case <-time.After(time.Second):
		}
		msg, got := make([]byte, 64), make([]byte, 64)
		tick := time.NewTicker(40 * time.Millisecond)
		defer tick.Stop()
		for {
			select {
			case <-stop:
				return
			case <-tick.C:
			}
			start := time.Now()
			c.SetDeadline(start.Add(30 * time.Second))
			if _, r.err = c.Write(msg); r.err != nil {
				return
			}
			if _, r.err = io.ReadFull(c, got); r.err != nil {
				return
			}
			r.echoes = append(r.echoes, time.Since(start))
		}
	}()
	up = upload()
	close(stop)
	r := <-res
	if r.err != nil {
		t.Fatalf("echo during bulk: %v", r.err)
	}
	return r.echoes, up
}

// TestFieldBench measures, with FIELDPASS_BENCH=1, one-stream throughput
// each way (median of 3), new connection + echo over 300 connections and
// a 64-byte echo every 40 ms on an open connection while an upload runs on
// the same tunnel, through `fieldpass forward` and with raw TCP, across the
// carrier shaped to 20 Mbit/s each way at 0, 1 and 5 % loss (nft drops,
// each way), and through the tunnel alone on a 300 ms round trip (the
// delay relay; raw TCP cannot take that path, as this kernel has no netem).
// FIELDPASS_BENCH_MIB sets the transfer size (16 MiB; half at 5 % loss),
// FIELDPASS_BENCH_CONNS
// the new connections (300; at most 60 on the 300 ms path), FIELDPASS_BENCH_CASES the conditions run (name
// prefixes, comma-separated: "0%,300 ms").
func TestFieldBench(t *testing.T) {
	if os.Getenv("FIELDPASS_BENCH") != "1" {
		t.Skip("a benchmark of minutes: set FIELDPASS_BENCH=1 (make bench-field)")
	}
	size := int64(16 << 20)
	if v := os.Getenv("FIELDPASS_BENCH_MIB"); v != "" {
		mib, err := strconv.Atoi(v)
		if err != nil {
			t.Fatalf("FIELDPASS_BENCH_MIB: %v", err)
		}
		size = int64(mib) << 20
	}
	conns := 300
	if v := os.Getenv("FIELDPASS_BENCH_CONNS"); v != "" {
		conns, _ = strconv.Atoi(v)
	}
	began := time.Now()
	s := newCellularSetup(t)
	shapeCarrier(t, s.d)
	raw := newRawPeer(t, s.f)
	echoAddr, _ := s.engineer.forward(t, "pump-7", "echo")
	discardAddr, _ := s.engineer.forward(t, "pump-7", "discard")
	chargenAddr, _ := s.engineer.forward(t, "pump-7", "chargen")

	type condition struct {
		name       string
		loss       int
		delay      time.Duration // each way, tunnel only
		raw, fp    benchFigures
		drops      int64 // carrier queue drops during the condition
		seen, lost int64
	}
	conds := []*condition{
		{name: "0% loss", loss: 0},
		{name: "1% loss", loss: 1},
		{name: "5% loss", loss: 5},
		{name: "300 ms RTT", delay: 150 * time.Millisecond},
	}
	if v := os.Getenv("FIELDPASS_BENCH_CASES"); v != "" { // e.g. "0%,300 ms"
		conds = slices.DeleteFunc(conds, func(c *condition) bool {
			return !slices.ContainsFunc(strings.Split(v, ","), func(p string) bool { return strings.HasPrefix(c.name, p) })
		})
	}
	var tab bytes.Buffer
	fmt.Fprintf(&tab, "field benchmark: carrier shaped to %s each way (tbf, queue %s), loss by nft each way; %d MiB transfers (median of 3), %d new connections, echo of 64 B every 40 ms during a %d MiB upload\n",
		fieldLinkRate, fieldQueue, size>>20, conns, size>>20)
	fmt.Fprintf(&tab, "%-11s %-10s %-15s %-22s %-24s %s\n", "condition", "path", "up/down MB/s", "new conn p50/p99 ms", "echo in bulk p50/p99 ms", "carrier queue drops / loss drops")
	row := func(c *condition, path string, f benchFigures, extra string) {
		if len(f.up) == 0 {
			return
		}
		fmt.Fprintf(&tab, "%-11s %-10s %-15s %-22s %-24s %s\n", c.name, path,
			fmt.Sprintf("%.2f / %.2f", medianRate(f.up), medianRate(f.down)),
			fmt.Sprintf("%s / %s", pct(f.opens, 0.5), pct(f.opens, 0.99)),
			fmt.Sprintf("%s / %s (n=%d)", pct(f.echoes, 0.5), pct(f.echoes, 0.99), len(f.echoes)),
			extra)
	}
	for _, c := range conds {
		if c.loss > 0 {
			s.f.conditions(t, lossRules(c.loss)...)
		} else {
			s.f.conditions(t)
		}
		s.relay.SetDelay(c.delay, 0)
		drops0 := tbfDrops(t, s.d)
		phase := time.Now()
		withRaw := c.delay == 0

		// Each transfer must end within the harness's bulkTimeout (60 s);
		// at 5 % loss the tunnel has moved 16 MiB in 40-50 s.
		xsize := size
		if c.loss >= 5 {
			xsize = size / 2
		}
		for range 3 {
			if withRaw {
				c.raw.up = append(c.raw.up, raw.upload(t, s.d, xsize))
				c.raw.down = append(c.raw.down, raw.download(t, s.d, xsize))
			}
			c.fp.up = append(c.fp.up, s.upload(t, discardAddr, xsize))
			c.fp.down = append(c.fp.down, s.download(t, chargenAddr, xsize))
		}
		t.Logf("%s: transfers done in %s", c.name, time.Since(phase).Round(time.Second))

		n := conns
		if c.delay > 0 {
			n = min(conns, 60) // a second each
		}
		for range n {
			if withRaw {
				d, err := rawEchoOnce(s.d, raw.echo)
				if err != nil {
					t.Fatalf("%s: raw new connection: %v", c.name, err)
				}
				c.raw.opens = append(c.raw.opens, d)
			}
			d, err := s.echoOnce(echoAddr)
			if err != nil {
				t.Fatalf("%s: a new connection through the echo forward: %v", c.name, err)
			}
			c.fp.opens = append(c.fp.opens, d)
		}

		if withRaw {
			ec, err := s.d.ns.dial(context.Background(), "tcp", raw.echo)
			if err != nil {
				t.Fatal(err)
			}
			c.raw.echoes, c.raw.echoUpload = echoDuringBulk(t, ec, func() xfer { return raw.upload(t, s.d, xsize) })
			ec.Close()
		}
		ec, err := s.f.eng.dial(context.Background(), "tcp", echoAddr)
		if err != nil {
			t.Fatal(err)
		}
		c.fp.echoes, c.fp.echoUpload = echoDuringBulk(t, ec, func() xfer { return s.upload(t, discardAddr, xsize) })
		ec.Close()
		c.drops = tbfDrops(t, s.d) - drops0
		if c.loss > 0 {
			c.seen, c.lost = s.lossCounts(t)
		}
		t.Logf("%s: measured in %s", c.name, time.Since(phase).Round(time.Second))
		so := tab.Len()
		row(c, "raw TCP", c.raw, "")
		row(c, "fieldpass", c.fp, fmt.Sprintf("%d / %d of %d", c.drops, c.lost, c.seen))
		t.Logf("\n%s", tab.Bytes()[so:])
		tab.Truncate(so)
	}
	s.f.conditions(t)
	s.relay.SetDelay(0, 0)

	for _, c := range conds {
		row(c, "raw TCP", c.raw, "")
		row(c, "fieldpass", c.fp, fmt.Sprintf("%d / %d of %d", c.drops, c.lost, c.seen))
	}
	fmt.Fprintf(&tab, "relay queue overflows %d; wall time %s", s.relay.Counters().Overflowed, time.Since(began).Round(time.Second))
	t.Logf("\n%s", tab.String())
}

// rawEchoOnce dials addr from the device, sends a byte and times its echo.
func rawEchoOnce(d *fieldDevice, addr string) (time.Duration, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	start := time.Now()
	c, err := d.ns.dial(ctx, "tcp", addr)
	if err != nil {
		return 0, err
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(20 * time.Second))
	b := []byte{'x'}
	if _, err := c.Write(b); err != nil {
		return 0, err
	}
	if _, err := io.ReadFull(c, b); err != nil {
		return 0, err
	}
	return time.Since(start), nil
}

// pct is the q-quantile of samples in milliseconds, "-" without samples.
func pct(samples []time.Duration, q float64) string {
	if len(samples) == 0 {
		return "-"
	}
	return ms2(quantile(samples, q))
}

// ms2 is d in milliseconds with two significant decimals below 10 ms.
func ms2(d time.Duration) string {
	m := float64(d) / float64(time.Millisecond)
	if m < 10 {
		return strconv.FormatFloat(m, 'f', 2, 64)
	}
	return strconv.FormatFloat(m, 'f', 0, 64)
}
