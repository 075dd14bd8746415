package connector

import (
	"context"
	"errors"
	"log/slog"
	"net"
	"sort"
	"strings"
	"sync"
	"time"
)

// netChange says what a burst of change notifications was about.
type netChange uint8

const (
	// addrsChanged: an address or a link came, went or changed; look
	// whether the local addresses differ.
	addrsChanged netChange = 1 << iota
	// defaultRoute: a default route was added. Rebind even if the
	// addresses are the same: a roam flushes the old address, adds the new
	// one and only then the route, and a keepalive sent before the route
	// was there went nowhere; a failover between two uplinks changes the
	// source address with no address change at all.
	defaultRoute
)

const (
	// netSettle gathers a burst of notifications (a roam is an address
	// flush, an add and a route: three commands, a few ms apart) into one
	// look at the addresses.
	netSettle = 10 * time.Millisecond
	// With notifications the poll is a safety net for a change they
	// missed; without them (no rtnetlink, or not Linux), the only way to
	// learn of one.
	netPollNotified   = 30 * time.Second
	netPollUnnotified = 5 * time.Second
)

// netWatcher tells when the device's network has changed in a way that
// calls for a rebind: the broker keeps sending to the old address until the
// device sends something, so the device must speak first. On Linux it
// learns of changes from the kernel at once, at no idle cost (no traffic,
// no timer but the slow fallback poll).
type netWatcher struct {
	poll time.Duration // configured; 0: the default for how changes are learnt
	log  *slog.Logger
	nl   *netlinkWatch // nil: polling only
	last string        // localAddrs at the last look
}

// newNetWatcher subscribes to change notifications and reads the local
// addresses: a change from here on is seen. run must follow; it releases
// the subscription.
func newNetWatcher(poll time.Duration, log *slog.Logger) *netWatcher {
	w := &netWatcher{poll: poll, log: log}
	nl, err := openNetlinkWatch()
	if err == nil {
		w.nl = nl
	} else if !errors.Is(err, errors.ErrUnsupported) {
		log.Warn("no network change notifications; polling local addresses", "every", w.period(), "err", err)
	}
	w.last = localAddrs()
	return w
}

func (w *netWatcher) period() time.Duration {
	switch {
	case w.poll > 0:
		return w.poll
	case w.nl != nil:
		return netPollNotified
	default:
		return netPollUnnotified
	}
}

// run calls changed, on run's own goroutine, for each change until ctx
// ends; by then its notification reader has stopped too.
func (w *netWatcher) run(ctx context.Context, changed func(addrs, reason string)) {
	var events chan netChange
	var failed chan error
	if w.nl != nil {
		events, failed = make(chan netChange), make(chan error, 1)
		var wg sync.WaitGroup
		defer wg.Wait()
		nl := w.nl
		wg.Go(func() { failed <- nl.run(ctx, events) })
	}
	tick := time.NewTicker(w.period())
	defer tick.Stop()
	var pending netChange
	var settle <-chan time.Time // nil: no burst being gathered
	for {
		force := false
		select {
		case <-ctx.Done():
			return
		case err := <-failed:
			// Not retried: a broken subscription must not spin.
			w.nl, events, failed = nil, nil, nil
			w.log.Warn("network change notifications failed; polling local addresses", "every", w.period(), "err", err)
			tick.Reset(w.period())
			continue
		case ev := <-events:
			pending |= ev
			if settle == nil {
				settle = time.After(netSettle)
			}
			continue
		case <-settle:
			force = pending&defaultRoute != 0
			pending, settle = 0, nil
		case <-tick.C:
		}
		now := localAddrs()
		reason := ""
		switch {
		case now != w.last:
			reason = "addresses"
		case force:
			reason = "default route"
		}
		w.last = now
		if reason != "" {
			changed(now, reason)
		}
	}
}

func localAddrs() string {
	addrs, err := net.InterfaceAddrs()
	if err != nil {
		return ""
	}
	s := make([]string, len(addrs))
	for i, a := range addrs {
		s[i] = a.String()
	}
	sort.Strings(s)
	return strings.Join(s, ",")
}
