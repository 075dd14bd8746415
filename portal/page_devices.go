package portal

import (
	"net/http"
	"strings"
	"time"

	"github.com/go-chi/chi/v5"

	"github.com/fieldpass/fieldpass"
	"github.com/fieldpass/fieldpass/access"
)

// devicesData is the devices page: the caller's devices, filtered.
type devicesData struct {
	Devices []access.DeviceAccess
	Q       string // name contains
	Label   string // k=v
	Status  string // online, offline or ""
	Total   int    // before filtering
	Web     bool   // device web UIs can open here
}

// HandleDevices lists the devices the caller may see now, searchable by
// name and label, with the services they may open and the time left.
func (p *Portal) HandleDevices() http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		c := fieldpass.CallerFromContext(r.Context())
		devs, err := p.cfg.Access.Devices(r.Context(), c)
		if err != nil {
			p.fail(w, r, err)
			return
		}
		q := r.URL.Query()
		d := devicesData{Q: clip(strings.TrimSpace(q.Get("q")), 100), Label: clip(strings.TrimSpace(q.Get("label")), 200),
			Status: q.Get("status"), Total: len(devs), Web: p.cfg.WebDomain != "" && p.cfg.Sessions != nil}
		lk, lv, hasLabel := strings.Cut(d.Label, "=")
		for _, dev := range devs {
			if d.Q != "" && !strings.Contains(strings.ToLower(dev.Name), strings.ToLower(d.Q)) {
				continue
			}
			if d.Label != "" && !matchesLabel(dev.Labels, lk, lv, hasLabel) {
				continue
			}
			if d.Status == "online" && !dev.Presence.Online || d.Status == "offline" && dev.Presence.Online {
				continue
			}
			d.Devices = append(d.Devices, dev)
		}
		p.render(w, r, http.StatusOK, "devices", view{Title: "Devices", Current: "devices", Data: d, Refresh: 15})
	}
}

// matchesLabel: k=v matches that label; a bare k, any device carrying k.
func matchesLabel(labels map[string]string, k, v string, withValue bool) bool {
	got, ok := labels[k]
	return ok && (!withValue || got == v)
}

// deviceData is a device's page.
type deviceData struct {
	Device   access.DeviceAccess
	Grants   []*fieldpass.Grant
	Sessions []*fieldpass.Session
	History  []*fieldpass.DeviceEvent // nil: the caller may not read it
	Web      bool                     // device web UIs can open here
	HostKeys []fieldpass.SSHHostKey   // admins only
}

// HandleDevice shows one device: its state and services, the grants that
// cover it, recent sessions, and (to admins and auditors) its connectivity
// history as a timeline.
func (p *Portal) HandleDevice() http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		c := fieldpass.CallerFromContext(r.Context())
		ctx := r.Context()
		name := chi.URLParam(r, "name")
		dev, err := p.cfg.Access.Device(ctx, c, name)
		if err != nil {
			p.fail(w, r, err)
			return
		}
		d := deviceData{Device: dev, Web: p.cfg.WebDomain != "" && p.cfg.Sessions != nil}
		if d.Grants, err = p.cfg.Access.Grants(ctx, c, fieldpass.GrantFilter{Device: name, ActiveAt: p.cfg.Now(), Limit: 100}); err != nil {
			p.fail(w, r, err)
			return
		}
		if d.Sessions, err = p.cfg.Access.Sessions(ctx, c, fieldpass.SessionFilter{Device: name, Limit: 20}); err != nil {
			p.fail(w, r, err)
			return
		}
		if c.User.HasRole(fieldpass.RoleAdmin) {
			if d.HostKeys, err = p.cfg.DB.HostKeys(ctx, dev.ID); err != nil {
				p.fail(w, r, err)
				return
			}
		}
		if access.SeesAll(c) {
			if d.History, err = p.cfg.Access.DeviceHistory(ctx, c, name, p.cfg.Now().Add(-7*24*time.Hour), 200); err != nil {
				p.fail(w, r, err)
				return
			}
		}
		p.render(w, r, http.StatusOK, "device", view{Title: dev.Name, Current: "devices", Data: d})
	}
}
