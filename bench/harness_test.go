package bench_test

import (
	"bufio"
	"context"
	"crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math"
	"net"
	"os"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/fieldpass/fieldpass/broker"
	"github.com/fieldpass/fieldpass/broker/brokertest"
	"github.com/fieldpass/fieldpass/connector"
	"github.com/fieldpass/fieldpass/postgres/pgtest"
	"github.com/fieldpass/fieldpass/tunnel"
)

func TestMain(m *testing.M) { pgtest.Main(m) }

// gate skips tb unless FIELDPASS_BENCH is set: the fleet and idle
// measurements take minutes and are not part of make test.
func gate(tb testing.TB) {
	tb.Helper()
	if os.Getenv("FIELDPASS_BENCH") == "" {
		tb.Skip("a measurement taking minutes: set FIELDPASS_BENCH=1 to run it")
	}
}

// envInt reads a positive integer from the environment, or def.
func envInt(tb testing.TB, name string, def int) int {
	tb.Helper()
	v := os.Getenv(name)
	if v == "" {
		return def
	}
	n, err := strconv.Atoi(v)
	if err != nil || n <= 0 {
		tb.Fatalf("%s=%q: want a positive integer", name, v)
	}
	return n
}

// envDuration reads a positive duration from the environment, or def.
func envDuration(tb testing.TB, name string, def time.Duration) time.Duration {
	tb.Helper()
	v := os.Getenv(name)
	if v == "" {
		return def
	}
	d, err := time.ParseDuration(v)
	if err != nil || d <= 0 {
		tb.Fatalf("%s=%q: want a positive duration such as 90s", name, v)
	}
	return d
}

// newEnv is one broker in the test process with its database and
// enrolment API, WireGuard on 127.0.0.1 (so our single-address bind, never
// the stock one, which listens on every address). Broker settings are the
// defaults a deployment gets.
func newEnv(tb testing.TB) *brokertest.Env {
	tb.Helper()
	return brokertest.New(tb, brokertest.WithBrokerConfig(func(c *broker.Config) {
		c.ID = "bench-broker"
		c.PresenceInterval = 0 // the default, not the tests' 200ms
	}))
}

// startConnector runs a connector with default settings but for a UDP
// socket on 127.0.0.1 and no polling of local addresses (which sends
// nothing, and would only add load).
func startConnector(e *brokertest.Env, s *connector.State, services map[string]string) *brokertest.Connector {
	return e.StartConnector(s, services, func(c *connector.Config) {
		c.MaxBackoff = 2 * time.Second
		c.DialTimeout = 0
	})
}

// newSessionID returns a random session id, as the broker's session records
// would have.
func newSessionID() tunnel.ID {
	var id tunnel.ID
	rand.Read(id[:])
	return id
}

// chunk is the read and write size of the transfer ends.
const chunk = 128 << 10

// sinkServer reads until EOF and answers with the byte count (8 bytes, big
// endian): the sender's clock stops when every byte has reached the target.
func sinkServer(tb testing.TB) string {
	return brokertest.Service(tb, func(c *net.TCPConn) {
		buf := make([]byte, chunk)
		var n int64
		for {
			r, err := c.Read(buf)
			n += int64(r)
			if errors.Is(err, io.EOF) {
				break
			}
			if err != nil {
				return
			}
		}
		binary.Write(c, binary.BigEndian, n)
		c.CloseWrite()
	})
}

// sourceServer reads a byte count (8 bytes, big endian) and sends that many
// bytes, then EOF.
func sourceServer(tb testing.TB) string {
	buf := make([]byte, chunk)
	rand.Read(buf)
	return brokertest.Service(tb, func(c *net.TCPConn) {
		var n int64
		if err := binary.Read(c, binary.BigEndian, &n); err != nil {
			return
		}
		for n > 0 {
			w, err := c.Write(buf[:min(n, int64(len(buf)))])
			if err != nil {
				return
			}
			n -= int64(w)
		}
		c.CloseWrite()
		io.Copy(io.Discard, c)
	})
}

// upload sends n bytes to a sink and waits for its count.
func upload(c tunnel.HalfCloser, n int64, buf []byte) error {
	for left := n; left > 0; {
		w, err := c.Write(buf[:min(left, int64(len(buf)))])
		if err != nil {
			return fmt.Errorf("write: %w", err)
		}
		left -= int64(w)
	}
	if err := c.CloseWrite(); err != nil {
		return fmt.Errorf("close write: %w", err)
	}
	var got int64
	if err := binary.Read(c, binary.BigEndian, &got); err != nil {
		return fmt.Errorf("read count: %w", err)
	}
	if got != n {
		return fmt.Errorf("sink got %d bytes, want %d", got, n)
	}
	return nil
}

// download asks a source for n bytes and reads them to EOF.
func download(c tunnel.HalfCloser, n int64, buf []byte) error {
	if err := binary.Write(c, binary.BigEndian, n); err != nil {
		return fmt.Errorf("write request: %w", err)
	}
	var got int64
	for {
		r, err := c.Read(buf)
		got += int64(r)
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return fmt.Errorf("read after %d bytes: %w", got, err)
		}
	}
	c.CloseWrite()
	if got != n {
		return fmt.Errorf("got %d bytes from the source, want %d", got, n)
	}
	return nil
}

// hop is a loopback TCP listener in front of the broker, as the engineer's
// own connection reaches it: each connection gets a stream to service on
// device, joined to it.
func hop(tb testing.TB, b *broker.Broker, device, service string) string {
	return brokertest.Service(tb, func(c *net.TCPConn) {
		st, err := b.OpenStream(context.Background(), device, service, newSessionID())
		if err != nil {
			return
		}
		tunnel.Join(c, st)
	})
}

// dialTCP dials a loopback address.
func dialTCP(addr string) (*net.TCPConn, error) {
	c, err := net.Dial("tcp", addr)
	if err != nil {
		return nil, err
	}
	return c.(*net.TCPConn), nil
}

// percentile returns the p-th percentile (0-100) of sorted durations, nearest
// rank.
func percentile(sorted []time.Duration, p float64) time.Duration {
	if len(sorted) == 0 {
		return 0
	}
	i := int(math.Ceil(float64(len(sorted))*p/100)) - 1
	return sorted[max(0, min(i, len(sorted)-1))]
}

func micros(d time.Duration) float64 { return float64(d) / float64(time.Microsecond) }

// median returns the median of xs (which it sorts).
func median(xs []int64) int64 {
	slices.Sort(xs)
	if len(xs) == 0 {
		return 0
	}
	if len(xs)%2 == 1 {
		return xs[len(xs)/2]
	}
	return (xs[len(xs)/2-1] + xs[len(xs)/2]) / 2
}

// procRSS returns VmRSS of process pid in KiB.
func procRSS(pid int) (int64, error) {
	f, err := os.Open(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, err
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), "VmRSS:"); ok {
			return strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64)
		}
	}
	return 0, fmt.Errorf("no VmRSS in /proc/%d/status", pid)
}

// clockTicks is USER_HZ, the unit of /proc/PID/stat's times: 100 on every
// Linux architecture's user ABI.
const clockTicks = 100

// procCPU returns the user+system CPU time process pid has used.
func procCPU(pid int) (time.Duration, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, err
	}
	// The command name (field 2) is in parentheses and may hold spaces;
	// fields after it start at 3 (state), so utime (14) and stime (15)
	// are the 12th and 13th after the closing parenthesis.
	i := strings.LastIndexByte(string(b), ')')
	if i < 0 {
		return 0, fmt.Errorf("parse /proc/%d/stat", pid)
	}
	f := strings.Fields(string(b[i+1:]))
	if len(f) < 13 {
		return 0, fmt.Errorf("parse /proc/%d/stat: %d fields", pid, len(f))
	}
	ut, err1 := strconv.ParseInt(f[11], 10, 64)
	st, err2 := strconv.ParseInt(f[12], 10, 64)
	if err := errors.Join(err1, err2); err != nil {
		return 0, fmt.Errorf("parse /proc/%d/stat: %w", pid, err)
	}
	return time.Duration(ut+st) * time.Second / clockTicks, nil
}
