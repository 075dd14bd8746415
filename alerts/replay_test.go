package alerts_test

import (
	"context"
	"errors"
	"strings"
	"testing"

	"github.com/fieldpass/fieldpass"
	"github.com/fieldpass/fieldpass/alerts"
)

// replays is a ReplayStore that keeps what it is told, and fails for the
// ids in fail.
type replays struct {
	fail     map[string]bool
	recorded []string // "actor id webhook"
}

func (r *replays) RecordAlertReplay(ctx context.Context, actor, id, webhook string) error {
	if r.fail[id] {
		return errors.New("store down")
	}
	r.recorded = append(r.recorded, actor+" "+id+" "+webhook)
	return nil
}

func letter(id string) *fieldpass.DeadLetter {
	return &fieldpass.DeadLetter{ID: id, Kind: alerts.DeviceOffline, Payload: []byte(`{"id":"` + id + `","kind":"device_offline","at":"2030-06-01T12:00:00Z","device":"pump-7"}`)}
}

func TestReplay(t *testing.T) {
	recv, srv := newReceiver(t, 204, 500, 204)
	n := mustNew(t, alerts.Config{URL: srv.URL, Secret: secret})
	store := &replays{fail: map[string]bool{"c": true}}
	var got []alerts.ReplayResult
	failed, err := n.Replay(t.Context(), []*fieldpass.DeadLetter{letter("a"), letter("b"), letter("c")}, store, "operator:root@host",
		func(r alerts.ReplayResult) { got = append(got, r) })
	if err != nil {
		t.Fatal(err)
	}
	if failed != 2 {
		t.Errorf("failed: got %d, want 2", failed)
	}
	// Each is sent once, in order, under its own delivery id.
	for _, id := range []string{"a", "b", "c"} {
		if d := recv.next(t); d.id != id {
			t.Errorf("delivery: got id %q, want %q", d.id, id)
		}
	}
	if want := []string{"operator:root@host a " + alerts.Redact(srv.URL)}; strings.Join(store.recorded, "\n") != strings.Join(want, "\n") {
		t.Errorf("recorded: got %q, want %q", store.recorded, want)
	}
	want := []struct {
		id        string
		delivered bool
		err       string
	}{
		{"a", true, ""},
		{"b", false, "500"},
		{"c", true, "store down"},
	}
	if len(got) != len(want) {
		t.Fatalf("progress: got %d results, want %d", len(got), len(want))
	}
	for i, w := range want {
		r := got[i]
		if r.Letter.ID != w.id || r.N != i+1 || r.Of != 3 || r.Delivered != w.delivered {
			t.Errorf("result %d: got %s %d/%d delivered=%v, want %s %d/3 delivered=%v", i, r.Letter.ID, r.N, r.Of, r.Delivered, w.id, i+1, w.delivered)
		}
		if (r.Err == nil) != (w.err == "") || r.Err != nil && !strings.Contains(r.Err.Error(), w.err) {
			t.Errorf("result %d: got error %v, want %q", i, r.Err, w.err)
		}
	}
}

func TestReplayStopsWithContext(t *testing.T) {
	recv, srv := newReceiver(t)
	n := mustNew(t, alerts.Config{URL: srv.URL, Secret: secret})
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	failed, err := n.Replay(ctx, []*fieldpass.DeadLetter{letter("a"), letter("b")}, &replays{}, "operator:root@host", nil)
	if failed != 0 || !errors.Is(err, context.Canceled) || !strings.Contains(err.Error(), "stopped after 0 of 2 dead letters") {
		t.Errorf("got %d, %v; want 0 and stopped after 0 of 2", failed, err)
	}
	if len(recv.got) != 0 {
		t.Errorf("sent %d after the context ended", len(recv.got))
	}
}
