package broker

import (
	"testing"

	"github.com/fieldpass/fieldpass"
)

// TestHistoryQueueBound: events wait up to the limit the caller passes
// (which follows the fleet), the rest are refused at once; a take empties
// the queue and the next fills the spare slice handed back.
func TestHistoryQueueBound(t *testing.T) {
	h := &historyWriter{pending: make(chan struct{}, 1)}
	for i := range 5 {
		if ok := h.push(fieldpass.DeviceEvent{ID: int64(i)}, 3); ok != (i < 3) {
			t.Fatalf("push %d with limit 3: %v, want %v", i, ok, i < 3)
		}
	}
	if len(h.pending) != 1 {
		t.Errorf("no pending token after pushes")
	}
	q := h.take(nil)
	if len(q) != 3 || q[0].ID != 0 || q[2].ID != 2 {
		t.Fatalf("took %+v, want events 0, 1, 2 in order", q)
	}
	if !h.push(fieldpass.DeviceEvent{ID: 9}, 3) {
		t.Fatal("push after take refused")
	}
	q2 := h.take(q)
	if len(q2) != 1 || q2[0].ID != 9 {
		t.Fatalf("took %+v, want event 9", q2)
	}
	if !h.push(fieldpass.DeviceEvent{ID: 10}, 3) || &h.queue[0] != &q[0] {
		t.Error("the spare slice handed to take is not the one filled next")
	}
}
