//go:build linux

package e2e_test

import (
	"fmt"
	"os"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/fieldpass/fieldpass"
)

// procStatusKB reads a "Name:   N kB" line of /proc/PID/status.
func procStatusKB(pid int, name string) (int64, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, err
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, name+":"); ok {
			return strconv.ParseInt(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")), 10, 64)
		}
	}
	return 0, fmt.Errorf("no %s in /proc/%d/status", name, pid)
}

// rssSampler records the peak VmRSS of a process, sampled every 20 ms.
type rssSampler struct {
	stop chan struct{}
	wg   sync.WaitGroup
	peak int64 // kB; read after Stop
}

func sampleRSS(pid int) *rssSampler {
	s := &rssSampler{stop: make(chan struct{})}
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		tick := time.NewTicker(20 * time.Millisecond)
		defer tick.Stop()
		for {
			if kb, err := procStatusKB(pid, "VmRSS"); err == nil {
				s.peak = max(s.peak, kb)
			}
			select {
			case <-s.stop:
				return
			case <-tick.C:
			}
		}
	}()
	return s
}

// Stop ends the sampling and returns the peak in MB (10^6 bytes).
func (s *rssSampler) Stop() float64 {
	close(s.stop)
	s.wg.Wait()
	return float64(s.peak) * 1024 / 1e6
}

// TestFieldBenchConnectorMemory measures, with FIELDPASS_BENCH=1, the real
// connector's resident memory on an unshaped field network: idle with its
// tunnel up, then at its peak during a 1 GiB upload and a 1 GiB download
// through `fieldpass forward` (FIELDPASS_BENCH_MEM_MIB changes the size).
// The targets (issue 12): 12 MB idle, 24 MB under transfer.
func TestFieldBenchConnectorMemory(t *testing.T) {
	if os.Getenv("FIELDPASS_BENCH") != "1" {
		t.Skip("a benchmark: set FIELDPASS_BENCH=1 (make bench-field)")
	}
	size := int64(1 << 30)
	if v := os.Getenv("FIELDPASS_BENCH_MEM_MIB"); v != "" {
		mib, err := strconv.Atoi(v)
		if err != nil {
			t.Fatalf("FIELDPASS_BENCH_MEM_MIB: %v", err)
		}
		size = int64(mib) << 20
	}
	f := newFieldNet(t)
	s := &cellularSetup{f: f, uploads: make(chan xferResult, 4)}
	s.b = f.startBroker()
	s.d = f.addDevice("pump-7")
	s.serveDiscard(t)
	s.serveChargen(t)
	s.stateDir = s.d.enroll()
	s.startConnector()
	s.b.waitDevice("pump-7", 30*time.Second, "online", isOnline)
	s.admin = f.person("admin@example.com", fieldpass.RoleAdmin)
	s.engineer = f.person("eng@example.com", fieldpass.RoleEngineer)
	s.admin.mustRun(t, "grant", "create", "--user", "eng@example.com", "--device", "pump-7",
		"--service", "discard", "--service", "chargen", "--duration", "2h", "--reason", "memory benchmark", "--json")
	discardAddr, _ := s.engineer.forward(t, "pump-7", "discard")
	chargenAddr, _ := s.engineer.forward(t, "pump-7", "chargen")
	pid := s.connector.pid()

	// Idle: the tunnel up and its session open, a few seconds after.
	time.Sleep(5 * time.Second)
	idle, err := procStatusKB(pid, "VmRSS")
	if err != nil {
		t.Fatal(err)
	}
	rs := sampleRSS(pid)
	up := s.upload(t, discardAddr, size)
	upPeak := rs.Stop()
	rs = sampleRSS(pid)
	down := s.download(t, chargenAddr, size)
	downPeak := rs.Stop()
	time.Sleep(5 * time.Second)
	after, _ := procStatusKB(pid, "VmRSS")
	hwm, _ := procStatusKB(pid, "VmHWM")
	t.Logf("\nconnector RSS (MB): idle %.1f; peak during a %d MiB upload %.1f (%s), download %.1f (%s); 5 s after %.1f; high-water mark %.1f",
		float64(idle)*1024/1e6, size>>20, upPeak, up.rate(), downPeak, down.rate(), float64(after)*1024/1e6, float64(hwm)*1024/1e6)
	if strings.Contains(os.Getenv("GODEBUG"), "gctrace=1") {
		var gcs []string
		for _, l := range strings.Split(s.connector.log(), "\n") {
			if strings.HasPrefix(l, "gc ") {
				gcs = append(gcs, l)
			}
		}
		t.Logf("the connector's last GCs (GODEBUG=gctrace=1):\n%s", strings.Join(gcs[max(0, len(gcs)-12):], "\n"))
	}
}
