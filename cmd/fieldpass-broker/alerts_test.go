package main

import (
	"encoding/json"
	"errors"
	"flag"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/fieldpass/fieldpass/cmd/internal/cliexit"

	"github.com/fieldpass/fieldpass"
	"github.com/fieldpass/fieldpass/alerts"
	"github.com/fieldpass/fieldpass/postgres"
	"github.com/fieldpass/fieldpass/postgres/pgtest"
)

const replaySecret = "cli-test-alert-secret-0123456789"

// replayReceiver is a webhook that keeps the delivery ids of the alerts
// whose signature checks out, or refuses everything while failing is set.
type replayReceiver struct {
	failing atomic.Bool
	mu      sync.Mutex
	got     []string
	bad     []string
}

func (r *replayReceiver) ServeHTTP(w http.ResponseWriter, req *http.Request) {
	body, _ := io.ReadAll(req.Body)
	r.mu.Lock()
	defer r.mu.Unlock()
	var a alerts.Alert
	id := req.Header.Get("X-Fieldpass-Delivery")
	if !alerts.Verify([]byte(replaySecret), body, req.Header.Get("X-Fieldpass-Signature")) ||
		json.Unmarshal(body, &a) != nil || a.ID != id {
		r.bad = append(r.bad, id)
		http.Error(w, "bad delivery", http.StatusBadRequest)
		return
	}
	if r.failing.Load() {
		http.Error(w, "down for maintenance", http.StatusServiceUnavailable)
		return
	}
	r.got = append(r.got, id)
}

func (r *replayReceiver) received() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.Clone(r.got)
}

// mustDeadLetter records a dead letter of a device alert, as the
// Notifier would, given up at failedAt.
func mustDeadLetter(t *testing.T, db *postgres.DB, id string, kind alerts.Kind, device string, failedAt time.Time) {
	t.Helper()
	body, err := json.Marshal(alerts.Alert{ID: id, Kind: kind, At: failedAt.Add(-time.Hour), Device: device,
		Details: map[string]any{"threshold": "10m0s"}})
	if err != nil {
		t.Fatal(err)
	}
	if err := db.RecordAlertDeadLetter(t.Context(), fieldpass.DeadLetter{ID: id, Kind: kind, Payload: body, Attempts: 20,
		LastError: "webhook answered 502 Bad Gateway", CreatedAt: failedAt.Add(-time.Hour), FailedAt: failedAt}); err != nil {
		t.Fatal(err)
	}
}

func listLetters(t *testing.T, dbURL string, args ...string) map[string]deadLetterOut {
	t.Helper()
	var list []deadLetterOut
	out := mustRun(t, dbURL, append([]string{"alerts", "list", "--json"}, args...)...)
	if err := json.Unmarshal([]byte(out), &list); err != nil {
		t.Fatalf("alerts list --json: %v\n%s", err, out)
	}
	m := map[string]deadLetterOut{}
	for _, d := range list {
		m[d.ID] = d
	}
	return m
}

// TestAlertsListReplay: dead letters are listed; replaying them re-sends
// each under its delivery id, signed, marks the ones the webhook accepted
// (and audits them), and --all skips those; a refusing webhook fails the
// command and leaves the letter to replay again.
func TestAlertsListReplay(t *testing.T) {
	ctx := t.Context()
	dbURL := pgtest.NewDatabase(t)
	db, err := postgres.Open(ctx, dbURL)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	recv := &replayReceiver{}
	srv := httptest.NewServer(recv)
	defer srv.Close()
	secretFile := filepath.Join(t.TempDir(), "alert.secret")
	if err := os.WriteFile(secretFile, []byte(replaySecret+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	hook := []string{"--alert-webhook", srv.URL + "/hooks/t0ken", "--alert-secret-file", secretFile}
	replay := func(args ...string) (string, error) {
		t.Helper()
		out, errOut, err := runCmd(t, dbURL, append(append([]string{"alerts", "replay"}, args...), hook...)...)
		return out + errOut, err
	}

	now := time.Now().UTC().Truncate(time.Second)
	mustDeadLetter(t, db, "aaaa0001", alerts.DeviceOffline, "pump-7", now.Add(-3*time.Hour))
	mustDeadLetter(t, db, "aaaa0002", alerts.DeviceEnrolled, "valve-2", now.Add(-2*time.Hour))
	mustDeadLetter(t, db, "aaaa0003", alerts.DeviceOffline, "tank-4", now.Add(-time.Hour))
	mustDeadLetter(t, db, "old00001", alerts.DeviceOffline, "silo-9", now.Add(-10*24*time.Hour))

	out := mustRun(t, dbURL, "alerts", "list")
	for _, want := range []string{"ID", "LAST ERROR", "aaaa0001", "device_offline", "pump-7", "webhook answered 502", "old00001"} {
		if !strings.Contains(out, want) {
			t.Errorf("alerts list: no %q in\n%s", want, out)
		}
	}
	if got := listLetters(t, dbURL, "--since", "7d"); len(got) != 3 || got["aaaa0003"].Summary != "tank-4" {
		t.Errorf("alerts list --since 7d: got %v, want the 3 newer letters", got)
	}
	if got := listLetters(t, dbURL, "--limit", "1"); len(got) != 1 || got["aaaa0003"].ID == "" {
		t.Errorf("alerts list --limit 1: got %v, want the newest", got)
	}

	// By id.
	out, err = replay("aaaa0001")
	if err != nil || !strings.Contains(out, "replayed 1/1 aaaa0001") || !strings.Contains(out, "1 of 1 dead letters replayed") {
		t.Fatalf("replay aaaa0001: %v\n%s", err, out)
	}
	if strings.Contains(out, "t0ken") {
		t.Errorf("replay output shows the webhook's path:\n%s", out)
	}
	if got := recv.received(); !slices.Equal(got, []string{"aaaa0001"}) {
		t.Errorf("received %v, want aaaa0001", got)
	}
	if d := listLetters(t, dbURL)["aaaa0001"]; d.Replays != 1 || d.ReplayedAt == nil {
		t.Errorf("after replay: got %+v, want it marked replayed", d)
	}
	for _, line := range strings.Split(mustRun(t, dbURL, "alerts", "list"), "\n") {
		id, _, _ := strings.Cut(line, " ")
		if replayed := !strings.HasSuffix(line, " no"); (id == "aaaa0001") != replayed && strings.HasPrefix(id, "aaaa") {
			t.Errorf("alerts list: row of %s says replayed %v:\n%s", id, replayed, line)
		}
	}

	// --all skips the replayed letter, and with --since the old one.
	out, err = replay("--all", "--since", "7d")
	if err != nil || !strings.Contains(out, "replayed 2/2 aaaa0003") {
		t.Fatalf("replay --all --since 7d: %v\n%s", err, out)
	}
	if got := recv.received(); !slices.Equal(got, []string{"aaaa0001", "aaaa0002", "aaaa0003"}) {
		t.Errorf("received %v, want aaaa0001, then aaaa0002 and aaaa0003 oldest first", got)
	}

	// A refusing webhook: non-zero exit, the letter stays unreplayed.
	recv.failing.Store(true)
	out, err = replay("--all")
	if err == nil || cliexit.Code(err) != 1 || !strings.Contains(out, "failed   1/1 old00001") || !strings.Contains(out, "503") {
		t.Errorf("replay to a refusing webhook: got %v (exit %d)\n%s", err, cliexit.Code(err), out)
	}
	if d := listLetters(t, dbURL)["old00001"]; d.Replays != 0 || d.ReplayedAt != nil {
		t.Errorf("after a refused replay: got %+v, want it unreplayed", d)
	}
	recv.failing.Store(false)
	if out, err = replay("--all"); err != nil || !strings.Contains(out, "replayed 1/1 old00001") {
		t.Errorf("replay --all once the webhook works: %v\n%s", err, out)
	}
	if out, err = replay("--all"); err != nil || !strings.Contains(out, "no dead letters to replay") {
		t.Errorf("replay --all with all replayed: %v\n%s", err, out)
	}
	// Named again, a replayed letter is re-sent.
	if out, err = replay("aaaa0002"); err != nil || listLetters(t, dbURL)["aaaa0002"].Replays != 2 {
		t.Errorf("replay of a replayed letter by id: %v\n%s", err, out)
	}
	if len(recv.bad) > 0 {
		t.Errorf("deliveries with a bad signature or body: %v", recv.bad)
	}

	evs, err := db.AuditEvents(ctx, fieldpass.AuditFilter{})
	if err != nil {
		t.Fatal(err)
	}
	var replayed []string
	for _, ev := range evs {
		if ev.Action == fieldpass.AuditAlertReplay {
			replayed = append(replayed, ev.Target)
			if !strings.HasPrefix(ev.Actor, "operator:") || strings.Contains(ev.Details["webhook"].(string), "t0ken") {
				t.Errorf("audit event %+v: want an operator, and no webhook path", ev)
			}
		}
	}
	if want := []string{"alert:aaaa0001", "alert:aaaa0002", "alert:aaaa0003", "alert:old00001", "alert:aaaa0002"}; !slices.Equal(replayed, want) {
		t.Errorf("audited replays: got %v, want %v", replayed, want)
	}

	_, _, err = runCmd(t, dbURL, append([]string{"alerts", "replay", "nosuch"}, hook...)...)
	if fieldpass.ErrorCode(err) != fieldpass.ENOTFOUND || cliexit.Code(err) != 1 {
		t.Errorf("replay of an unknown id: got %v, want not found", err)
	}
	for _, tc := range []struct {
		args []string
		msg  string
	}{
		{append([]string{"alerts", "replay"}, hook...), "give the IDs"},
		{append([]string{"alerts", "replay", "aaaa0001", "--all"}, hook...), "not both"},
		{append([]string{"alerts", "replay", "aaaa0001", "--since", "1h"}, hook...), "--since goes with --all"},
		{[]string{"alerts", "replay", "--all"}, "--alert-webhook is required"},
		{[]string{"alerts", "replay", "--all", "--alert-webhook", "http://hooks.example.com/x", "--alert-secret-file", secretFile}, "only to a loopback"},
		{[]string{"alerts", "replay", "--all", "--alert-webhook", srv.URL}, "needs --alert-secret-file"},
		{[]string{"alerts", "list", "--since", "yesterday"}, "invalid --since"},
		{[]string{"alerts", "frob"}, "unknown alerts subcommand"},
	} {
		t.Run(strings.Join(tc.args, " "), func(t *testing.T) {
			_, _, err := runCmd(t, dbURL, tc.args...)
			if err == nil || !strings.Contains(err.Error(), tc.msg) || cliexit.Code(err) != 2 {
				t.Errorf("got %v (exit %d), want a usage error containing %q", err, cliexit.Code(err), tc.msg)
			}
		})
	}
	for _, args := range [][]string{{"alerts", "list", "-h"}, {"alerts", "replay", "-h"}} {
		out, _, err := runCmd(t, dbURL, args...)
		if !errors.Is(err, flag.ErrHelp) || cliexit.Code(err) != 0 || !strings.Contains(out, "Usage: fieldpass-broker "+strings.Join(args[:2], " ")) {
			t.Errorf("%v: got %v, stdout %q", args, err, out)
		}
	}
	if out := mustRun(t, dbURL, "alerts", "-h"); !strings.Contains(out, "alerts replay") {
		t.Errorf("alerts -h: %q", out)
	}
}
