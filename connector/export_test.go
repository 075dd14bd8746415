package connector

import (
	"context"
	"log/slog"
	"time"
)

// Backoff exposes backoff to the external tests.
var Backoff = backoff

// NetWatcher exposes the network watcher to the external tests.
type NetWatcher struct{ w *netWatcher }

func NewNetWatcher(poll time.Duration, log *slog.Logger) NetWatcher {
	return NetWatcher{newNetWatcher(poll, log)}
}

// Notified reports whether the kernel's change notifications are in use.
func (w NetWatcher) Notified() bool { return w.w.nl != nil }

func (w NetWatcher) Run(ctx context.Context, changed func(addrs, reason string)) {
	w.w.run(ctx, changed)
}
