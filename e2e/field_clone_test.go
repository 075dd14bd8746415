//go:build linux

package e2e_test

import (
	"encoding/json"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/fieldpass/fieldpass"
	"github.com/fieldpass/fieldpass/alerts"
	"github.com/fieldpass/fieldpass/broker/brokertest"
)

// alertSink is a webhook receiver in a namespace, keeping the alerts whose
// signature verifies and counting those that don't.
type alertSink struct {
	url    string
	secret []byte

	mu     sync.Mutex
	got    []alerts.Alert
	forged int
}

func newAlertSink(t *testing.T, ns netns, secret []byte) *alertSink {
	t.Helper()
	s := &alertSink{secret: secret}
	ln := ns.listen(t, "tcp", "127.0.0.1:0")
	s.url = "http://" + ln.Addr().String() + "/hook"
	srv := &http.Server{Handler: s, ReadHeaderTimeout: 5 * time.Second}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
	return s
}

func (s *alertSink) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	body, _ := io.ReadAll(io.LimitReader(r.Body, 1<<20))
	s.mu.Lock()
	defer s.mu.Unlock()
	var a alerts.Alert
	if !alerts.Verify(s.secret, body, r.Header.Get("X-Fieldpass-Signature")) || json.Unmarshal(body, &a) != nil {
		s.forged++
		http.Error(w, "bad signature", http.StatusUnauthorized)
		return
	}
	s.got = append(s.got, a)
}

func (s *alertSink) find(kind alerts.Kind, device string) (alerts.Alert, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, a := range s.got {
		if a.Kind == kind && a.Device == device {
			return a, true
		}
	}
	return alerts.Alert{}, false
}

// TestFieldClone: a device's SD card is cloned into a second device on the
// same carrier. Both connectors present the same identity, so the broker
// sees one key flapping between two public endpoints: it records
// clone_suspected in the device's history, sends a signed alert naming the
// command to run, and once an admin disables the device neither gets in.
func TestFieldClone(t *testing.T) {
	t.Parallel()
	f := newFieldNet(t)
	secret := []byte("e2e clone alert secret, 32 bytes")
	secretFile := filepath.Join(t.TempDir(), "alert.secret")
	if err := os.WriteFile(secretFile, secret, 0o600); err != nil {
		t.Fatal(err)
	}
	sink := newAlertSink(t, f.inet, secret)
	b := f.startBroker("--alert-webhook", sink.url, "--alert-secret-file", secretFile)

	orig := f.addDevice("meter-9")
	clone := f.addDevice("meter-9-clone")
	stateDir := orig.enroll()
	cloneDir := filepath.Join(t.TempDir(), "cloned-card")
	if out, err := exec.Command("cp", "-a", stateDir, cloneDir).CombinedOutput(); err != nil {
		t.Fatalf("copy the state directory: %v\n%s", err, out)
	}
	// Default keepalives, as cloned cards would have, and the copy booting
	// a little after the original. The broker reads endpoints every 10 s:
	// copies whose keepalives fall within a moment of each other (started
	// together, or with a 2 s keepalive) hand the endpoint back and forth
	// between two of its reads, and the flapping goes unseen.
	p1 := orig.startConnector(stateDir, "--service", "echo=127.0.0.1:7")
	time.Sleep(12 * time.Second)
	p2 := clone.startConnector(cloneDir, "--service", "echo=127.0.0.1:7")
	start := time.Now()

	var ev fieldpass.DeviceEvent
	deadline := time.Now().Add(6 * time.Minute)
	for {
		evs := readDeviceHistory(t, b, "meter-9")
		found := false
		for _, e := range evs {
			if e.Kind == fieldpass.DeviceCloneSuspected {
				ev, found = e, true
			}
		}
		if found {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("no clone_suspected after %s; history: %+v", time.Since(start).Round(time.Second), evs)
		}
		time.Sleep(time.Second)
	}
	detected := time.Since(start)
	if ev.Endpoint == ev.PreviousEndpoint || ev.Endpoint == "" || ev.PreviousEndpoint == "" {
		t.Errorf("clone_suspected names endpoints %q and %q: want the two clones' endpoints", ev.PreviousEndpoint, ev.Endpoint)
	}
	var a alerts.Alert
	brokertest.WaitFor(t, 30*time.Second, "the clone alert delivered", func() bool {
		var ok bool
		a, ok = sink.find(alerts.CloneSuspected, "meter-9")
		return ok
	})
	if a.Details["action"] != "fieldpass-broker device disable meter-9" {
		t.Errorf("alert details %v: want the action fieldpass-broker device disable meter-9", a.Details)
	}

	// The admin acts on it: neither copy is let in any more.
	b.mustCLI("device", "disable", "meter-9")
	b.waitDevice("meter-9", 30*time.Second, "offline once disabled", isOffline)
	time.Sleep(5 * time.Second)
	if d, _ := b.device("meter-9"); d.Presence.Online {
		t.Errorf("a disabled cloned device came back online: %+v", d.Presence)
	}
	if p1.exited() || p2.exited() {
		t.Errorf("a connector exited (original %v, clone %v): want both to keep trying, refused", p1.exited(), p2.exited())
	}
	t.Logf("clone suspected %s after both copies started (endpoints %s and %s); alert delivered and signed",
		detected.Round(time.Second), ev.PreviousEndpoint, ev.Endpoint)
}
