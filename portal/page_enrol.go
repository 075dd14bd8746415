package portal

import (
	"net/http"
	"strings"
	"time"

	"github.com/go-chi/chi/v5"

	"github.com/fieldpass/fieldpass"
)

// enrolData is the enrolment page, with the commands for the device once
// a token was made.
type enrolData struct {
	Name, Labels, TTL string
	Token             string // shown once
	Expires           time.Time
	Broker            string
	// Command is the enroll command inside WireGuard (without
	// --state-dir); empty: the HTTPS form with Broker.
	Command string
	// Install installs the connector of Version, one line per kind of device.
	Install []fieldpass.InstallLine
	Version string
}

// HandleEnrol shows the enrolment form (admins).
func (p *Portal) HandleEnrol() http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		c := fieldpass.CallerFromContext(r.Context())
		if err := p.cfg.Access.Allow(c, fieldpass.AuditTokenCreate, "", fieldpass.RoleAdmin); err != nil {
			p.fail(w, r, err)
			return
		}
		p.render(w, r, http.StatusOK, "enrol", view{Title: "Enrol a device", Current: "enrol", Data: enrolData{TTL: "24h", Broker: p.cfg.PublicURL}})
	}
}

// HandleEnrolCreate makes an enrolment token and shows, once, the exact
// commands that install and enrol the connector on the device. The page is
// not cached and the token is never put in a URL.
func (p *Portal) HandleEnrolCreate() http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		c := fieldpass.CallerFromContext(r.Context())
		d := enrolData{Name: strings.TrimSpace(r.PostFormValue("name")), Labels: strings.TrimSpace(r.PostFormValue("labels")),
			TTL: strings.TrimSpace(r.PostFormValue("ttl")), Broker: p.cfg.PublicURL}
		labels := map[string]string{}
		for _, kv := range fields(d.Labels) {
			k, v, ok := strings.Cut(kv, "=")
			if !ok {
				p.fail(w, r, fieldpass.Errorf(fieldpass.EINVALID, "label %q: want key=value", clip(kv, 100)))
				return
			}
			labels[k] = v
		}
		ttl, err := fieldpass.ParsePositiveDuration("token lifetime", d.TTL)
		if err != nil {
			p.fail(w, r, err)
			return
		}
		if d.Token, d.Expires, err = p.cfg.Access.CreateEnrollmentToken(r.Context(), c, d.Name, labels, ttl); err != nil {
			p.fail(w, r, err)
			return
		}
		d.Install, d.Version = fieldpass.ConnectorInstallLines(p.cfg.DownloadURL, fieldpass.Version), fieldpass.Version
		if p.cfg.EnrolCommand != nil {
			cmd, err := p.cfg.EnrolCommand(r.Context(), d.Token)
			if err != nil {
				p.log.Warn("no enrol command inside WireGuard; showing the HTTPS one", "device", d.Name, "err", err)
			}
			d.Command = cmd
		}
		p.render(w, r, http.StatusOK, "enrol", view{Title: "Enrol " + d.Name, Current: "enrol", Data: d})
	}
}

// HandleDeviceState disables, enables or decommissions a device (admins),
// after the page asked for confirmation.
func (p *Portal) HandleDeviceState() http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		c := fieldpass.CallerFromContext(r.Context())
		name := chi.URLParam(r, "name")
		var state fieldpass.DeviceState
		switch r.PostFormValue("state") {
		case "disable":
			state = fieldpass.DeviceDisabled
		case "enable":
			state = fieldpass.DeviceActive
		case "decommission":
			state = fieldpass.DeviceDecommissioned
		default:
			p.fail(w, r, fieldpass.Errorf(fieldpass.EINVALID, "want disable, enable or decommission"))
			return
		}
		d, err := p.cfg.Access.SetDeviceState(r.Context(), c, name, state)
		if err != nil {
			p.fail(w, r, err)
			return
		}
		msg := d.Name + " is " + string(d.State) + "."
		if state != fieldpass.DeviceActive {
			msg += " Its live sessions are closed and its tunnel refused."
		}
		p.done(w, r, "/devices/"+d.Name, msg)
	}
}

// HandleDeviceKeepalive sets a device's keepalive (admins): a duration, or
// "default" for the connector's own.
func (p *Portal) HandleDeviceKeepalive() http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		c := fieldpass.CallerFromContext(r.Context())
		name := chi.URLParam(r, "name")
		var ka time.Duration
		if v := strings.TrimSpace(r.PostFormValue("keepalive")); v != "default" && v != "" {
			var err error
			if ka, err = fieldpass.ParsePositiveDuration("keepalive", v); err != nil {
				p.fail(w, r, err)
				return
			}
		}
		d, err := p.cfg.Access.SetDeviceKeepalive(r.Context(), c, name, ka)
		if err != nil {
			p.fail(w, r, err)
			return
		}
		msg := d.Name + " keeps its tunnel alive with the connector's own setting."
		if ka > 0 {
			msg = d.Name + " keeps its tunnel alive every " + fieldpass.FormatDuration(ka) + "."
		}
		p.done(w, r, "/devices/"+d.Name, msg)
	}
}
