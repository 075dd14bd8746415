package postgres

import (
	"context"
	"sync"
	"time"
)

// Writes that must take turns (each appends to the one audit chain, whose
// lock is held to the commit) are queued and run in groups, one
// transaction a group: session opens (session_open.go) and ends
// (session_end.go).

// maxGroup bounds the opens (or ends) in one transaction.
const maxGroup = 64

// groupTimeout bounds a group whose callers set no deadline.
const groupTimeout = 30 * time.Second

// grouper queues requests of one kind and runs them in groups, one group
// at a time, in a goroutine that lives while any wait.
type grouper[Q any] struct {
	mu      sync.Mutex
	queue   []*groupReq[Q]
	running bool
	groups  func(n int) // tests: called with each group's size
}

type groupReq[Q any] struct {
	ctx  context.Context
	q    Q
	err  error
	done chan struct{}
}

// do queues q and waits for its group to have run: run(ctx, qs) runs a
// group and returns each request's error (results go into the requests).
// Once a group has taken q, do waits for the group even past ctx (the
// group's deadline is the latest of its callers'): returning earlier
// would leave a committed row that no broker knows of.
func (g *grouper[Q]) do(ctx context.Context, q Q, run func(ctx context.Context, qs []Q) []error) error {
	r := &groupReq[Q]{ctx: ctx, q: q, done: make(chan struct{})}
	g.mu.Lock()
	g.queue = append(g.queue, r)
	if !g.running {
		g.running = true
		go g.run(run)
	}
	g.mu.Unlock()
	<-r.done
	return r.err
}

// run runs the queued requests, a group at a time, until none wait.
func (g *grouper[Q]) run(run func(ctx context.Context, qs []Q) []error) {
	for {
		g.mu.Lock()
		n := min(len(g.queue), maxGroup)
		if n == 0 {
			g.running = false
			g.queue = nil
			g.mu.Unlock()
			return
		}
		group := make([]*groupReq[Q], n)
		copy(group, g.queue)
		g.queue = g.queue[n:]
		hook := g.groups
		g.mu.Unlock()
		if hook != nil {
			hook(n)
		}
		runGroup(group, run)
	}
}

// runGroup runs group and answers each request. Callers that gave up
// before the group formed are answered with their context's error and
// left out.
func runGroup[Q any](group []*groupReq[Q], run func(ctx context.Context, qs []Q) []error) {
	var (
		live     []*groupReq[Q]
		deadline time.Time
	)
	for _, r := range group {
		if err := r.ctx.Err(); err != nil {
			r.err = err
			close(r.done)
			continue
		}
		d, ok := r.ctx.Deadline()
		if !ok {
			d = time.Now().Add(groupTimeout)
		}
		if d.After(deadline) {
			deadline = d
		}
		live = append(live, r)
	}
	if len(live) == 0 {
		return
	}
	ctx, cancel := context.WithDeadline(context.Background(), deadline)
	defer cancel()
	qs := make([]Q, len(live))
	for i, r := range live {
		qs[i] = r.q
	}
	errs := run(ctx, qs)
	for i, r := range live {
		r.err = errs[i]
		close(r.done)
	}
}
