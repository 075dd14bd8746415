//go:build linux

package e2e_test

import (
	"fmt"
	"regexp"
	"slices"
	"strconv"
	"testing"
	"time"
)

// TestFieldKeepaliveSetting: an operator sets a connected device's keepalive
// on the broker; the connector takes it over its live session (no
// reconnect), and the carrier sees the device's idle packets at the new
// interval. Clearing it gives the connector its own back.
func TestFieldKeepaliveSetting(t *testing.T) {
	t.Parallel()
	f := newFieldNet(t)
	b := f.startBroker()
	d := f.addDevice("meter-3")
	d.serveEcho(deviceEchoPort)
	c := d.startConnector(d.enroll(), "--service", "echo=127.0.0.1:7")
	b.waitDevice("meter-3", 30*time.Second, "online", isOnline)

	// The carrier counts what the device sends towards the broker.
	f.conditions(t, fmt.Sprintf("ip saddr %s udp dport 51820 counter", d.addr))
	b.mustCLI("device", "keepalive", "meter-3", "10s")
	c.waitLog(t, 15*time.Second, regexp.MustCompile(`msg="wireguard keepalive" keepalive=10s source=broker from="control stream"`))
	set := time.Now()

	// Watch the counter: each rise is a packet (an idle device's only
	// packets are keepalives, and a handshake every two minutes).
	var at []time.Time
	last := int64(-1)
	for time.Since(set) < 35*time.Second {
		out := f.carrier.exec(t, "nft", "list", "chain", "ip", "carrier", "conditions")
		m := nftCounterRE.FindStringSubmatch(out)
		if m == nil {
			t.Fatalf("no counter in the carrier's conditions:\n%s", out)
		}
		n, _ := strconv.ParseInt(m[1], 10, 64)
		if last >= 0 && n > last {
			at = append(at, time.Now())
		}
		last = n
		time.Sleep(200 * time.Millisecond)
	}
	var gaps []time.Duration
	for i := 1; i < len(at); i++ {
		gaps = append(gaps, at[i].Sub(at[i-1]).Round(100*time.Millisecond))
	}
	if len(gaps) < 2 {
		t.Fatalf("the carrier saw the device send at %v: want a packet about every 10 s", at)
	}
	slices.Sort(gaps)
	if med := gaps[len(gaps)/2]; med < 9*time.Second || med > 11*time.Second {
		t.Errorf("idle packets %v apart (median %s): want about 10 s", gaps, med)
	}
	if n := regexp.MustCompile(`connected to broker`).FindAllStringIndex(c.log(), -1); len(n) != 1 {
		t.Errorf("the connector connected %d times: want once, the setting taken over the live session", len(n))
	}
	b.mustCLI("device", "keepalive", "meter-3", "default")
	c.waitLog(t, 15*time.Second, regexp.MustCompile(`msg="wireguard keepalive" keepalive=25s source=connector from="control stream"`))
	t.Logf("with a 10 s setting, the carrier saw idle packets %v apart", gaps)
}
