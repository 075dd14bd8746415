package alerts

import (
	"context"
	"fmt"

	"github.com/fieldpass/fieldpass"
)

// ReplayStore records the dead letters an operator re-delivered
// (postgres.DB). It is all Replay needs of the store, so that alerts does
// not depend on the package that keeps the dead letters.
type ReplayStore interface {
	RecordAlertReplay(ctx context.Context, actor, id, webhook string) error
}

// ReplayResult is what became of one dead letter in a replay.
type ReplayResult struct {
	Letter *fieldpass.DeadLetter
	N, Of  int // its place in the replay, from 1, and the number of letters
	// Delivered is true when the webhook accepted it. Err is nil when it
	// was delivered and the replay recorded; with Delivered, Err is why it
	// was not recorded.
	Delivered bool
	Err       error
}

// Replay re-sends letters to n's webhook in the order given, one attempt
// each (Deliver), and records each one the webhook accepted in store as
// re-delivered by actor. progress, if not nil, hears of each letter once it
// is done with. Replay returns how many were not replayed; it stops early,
// with an error, only when ctx ends.
//
// A letter delivered but not recorded counts as failed: a later replay of
// the unreplayed ones sends it again, and the receiver drops the duplicate
// by its delivery id.
func (n *Notifier) Replay(ctx context.Context, letters []*fieldpass.DeadLetter, store ReplayStore, actor string, progress func(ReplayResult)) (failed int, err error) {
	webhook := Redact(n.cfg.URL)
	for i, d := range letters {
		if ctx.Err() != nil {
			return failed, fmt.Errorf("stopped after %d of %d dead letters (%d failed): %w", i, len(letters), failed, ctx.Err())
		}
		r := ReplayResult{Letter: d, N: i + 1, Of: len(letters)}
		if r.Err = n.Deliver(ctx, d.ID, d.Payload); r.Err == nil {
			r.Delivered = true
			r.Err = store.RecordAlertReplay(ctx, actor, d.ID, webhook)
		}
		if r.Err != nil {
			failed++
		}
		if progress != nil {
			progress(r)
		}
	}
	return failed, nil
}
