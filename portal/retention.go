package portal

import (
	"context"
	"time"
)

// retentionEvery is how often RunRetention looks for what is past its time.
const retentionEvery = time.Hour

// RunRetention deletes, every hour until ctx ends, terminal recordings and
// device web request logs older than Config.RecordingRetention; each pass
// that deletes anything is recorded in the audit log. It returns at once
// when the retention is forever (zero).
func (p *Portal) RunRetention(ctx context.Context) {
	keep := p.cfg.RecordingRetention
	if keep <= 0 || p.cfg.DB == nil {
		return
	}
	actor := "broker:" + p.cfg.BrokerID
	t := time.NewTicker(retentionEvery)
	defer t.Stop()
	for {
		before := p.cfg.Now().Add(-keep)
		recs, reqs, err := p.cfg.DB.ApplyRetention(ctx, actor, before)
		switch {
		case err != nil && ctx.Err() == nil:
			p.log.Error("retention", "err", err)
		case recs > 0 || reqs > 0:
			p.log.Info("retention applied", "before", before, "recordings", recs, "web_requests", reqs)
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}
