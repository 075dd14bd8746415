package portal

import (
	"encoding/hex"
	"net/http"
	"strings"
	"time"

	"github.com/fieldpass/fieldpass"
	"github.com/fieldpass/fieldpass/access"
)

// auditData is the audit page: the chain's state and filtered events.
type auditData struct {
	State                         access.AuditState
	Events                        []fieldpass.AuditEvent
	Actor, Action, Target, From   string
	CheckpointHash, CheckpointKey string
}

// HandleAudit shows whether the audit log's hash chain checks out, its
// newest signed checkpoint, and the events, filtered by actor, action,
// target and time (auditors and admins).
func (p *Portal) HandleAudit() http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		c := fieldpass.CallerFromContext(r.Context())
		q := r.URL.Query()
		d := auditData{Actor: clip(strings.TrimSpace(q.Get("actor")), 200), Action: clip(strings.TrimSpace(q.Get("action")), 100),
			Target: clip(strings.TrimSpace(q.Get("target")), 200), From: clip(strings.TrimSpace(q.Get("from")), 40)}
		if d.Actor == "" && d.Action == "" && d.Target == "" && d.From == "" {
			d.From = p.cfg.Now().UTC().Add(-24 * time.Hour).Format(time.RFC3339) // the last day
		}
		since, err := formTime(d.From, false)
		if err != nil {
			p.fail(w, r, err)
			return
		}
		if d.State, err = p.cfg.Access.AuditState(r.Context(), c); err != nil {
			p.fail(w, r, err)
			return
		}
		if cp := d.State.Checkpoint; cp != nil {
			d.CheckpointHash, d.CheckpointKey = hex.EncodeToString(cp.Hash), hex.EncodeToString(cp.PublicKey)
		}
		f := fieldpass.AuditFilter{Actor: d.Actor, Action: d.Action, Target: d.Target, Since: since, Limit: 500}
		if d.Events, err = p.cfg.Access.AuditEvents(r.Context(), c, f); err != nil {
			p.fail(w, r, err)
			return
		}
		p.render(w, r, http.StatusOK, "audit", view{Title: "Audit", Current: "audit", Data: d})
	}
}
