package apiserver

import (
	"net/http"
	"net/netip"

	"github.com/fieldpass/fieldpass"
	"github.com/fieldpass/fieldpass/alerts"
	"github.com/fieldpass/fieldpass/ratelimit"
	"github.com/fieldpass/fieldpass/tunnel"
)

// handleEnroll registers a device's public key in exchange for a single-use
// token, and records it in the audit log in the same transaction. The token
// is never logged.
func (s *Server) handleEnroll() http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		var req tunnel.EnrollRequest
		if err := decodeJSON(w, r, 4<<10, &req); err != nil {
			s.writeError(w, r, err)
			return
		}
		if err := fieldpass.CheckEnrollmentToken(req.Token); err != nil {
			s.writeError(w, r, err)
			return
		}
		ti := s.cfg.Tunnel
		// A device holding the broker's own key would make the broker its
		// own peer; strict base64 has one spelling per key, so the strings
		// compare as the keys do.
		if req.PublicKey == ti.BrokerKey {
			s.writeError(w, r, fieldpass.Errorf(fieldpass.EINVALID, "invalid WireGuard public key: it is the broker's own"))
			return
		}
		d, err := s.cfg.DB.EnrollAudited(r.Context(), ratelimit.ClientAddr(r), req.Token, req.PublicKey, req.ConnectorVersion, func(seq int64) (netip.Addr, error) {
			return fieldpass.TunnelAddress(ti.Prefix, seq-1) // the sequence starts at 1
		})
		if err != nil {
			s.log.Warn("enrolment refused", "client", ratelimit.ClientAddr(r), "code", fieldpass.ErrorCode(err), "reason", fieldpass.ErrorMessage(err))
			s.writeError(w, r, err)
			return
		}
		s.log.Info("device enrolled", "device", d.Name, "id", d.ID, "address", d.TunnelAddr, "client", ratelimit.ClientAddr(r))
		s.cfg.Alerts.Notify(alerts.Alert{Kind: alerts.DeviceEnrolled, At: s.cfg.Now(), Device: d.Name, Details: map[string]any{
			"device_id": d.ID, "tunnel_address": d.TunnelAddr.String(), "client": ratelimit.ClientAddr(r),
			"connector_version": req.ConnectorVersion, "labels": d.Labels,
		}})
		writeJSON(w, http.StatusOK, tunnel.EnrollResponse{
			DeviceID:      d.ID,
			DeviceName:    d.Name,
			TunnelAddress: d.TunnelAddr.String(),
			BrokerAddress: ti.BrokerAddress.String(),
			BrokerPort:    tunnel.BrokerPort,
			BrokerKey:     ti.BrokerKey,
			Endpoints:     ti.Endpoints,
			MTU:           ti.MTU,
		})
	}
}
