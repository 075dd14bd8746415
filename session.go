package fieldpass

import "time"

// EndReason says why a session ended.
type EndReason string

// End reasons. The schema's sessions_end_reason_check lists the same.
const (
	EndClientClosed     EndReason = "client_closed"     // the person's side closed
	EndDeviceClosed     EndReason = "device_closed"     // the device's service or tunnel closed
	EndGrantExpired     EndReason = "grant_expired"     // the grant's End passed
	EndGrantRevoked     EndReason = "grant_revoked"     // the grant was revoked
	EndDeviceDisabled   EndReason = "device_disabled"   // the device was disabled or decommissioned
	EndUserDisabled     EndReason = "user_disabled"     // the user was disabled
	EndByAdmin          EndReason = "ended_by_admin"    // an admin cut it
	EndIdleTimeout      EndReason = "idle_timeout"      // no bytes for too long
	EndAuditUnavailable EndReason = "audit_unavailable" // the store could not be written
	EndBrokerRestart    EndReason = "broker_restart"    // left open by a broker that stopped
	EndDialFailed       EndReason = "dial_failed"       // the connector never reached the service
	EndError            EndReason = "error"             // anything else
	// The token the session was opened with stopped holding (issue 10): a
	// session lives no longer than the login that carried it.
	EndTokenRevoked EndReason = "token_revoked" // an admin revoked the token
	EndTokenExpired EndReason = "token_expired" // the token's expiry passed
	EndLoggedOut    EndReason = "logged_out"    // the person revoked their own token
)

// EndReasons lists every end reason.
var EndReasons = []EndReason{
	EndClientClosed, EndDeviceClosed, EndGrantExpired, EndGrantRevoked, EndDeviceDisabled,
	EndUserDisabled, EndByAdmin, EndIdleTimeout, EndAuditUnavailable, EndBrokerRestart, EndError,
	EndDialFailed, EndTokenRevoked, EndTokenExpired, EndLoggedOut,
}

// ValidateEndReason checks r.
func ValidateEndReason(r EndReason) error {
	for _, ok := range EndReasons {
		if r == ok {
			return nil
		}
	}
	return Errorf(EINVALID, "invalid session end reason %q", r)
}

// Session is one connection of a person to a device's service, within a
// grant. Its row is committed before any byte flows (fail closed), and it
// is ended once: the first end recorded wins.
type Session struct {
	ID         string `json:"id"`
	User       string `json:"user"`      // the person's email
	Device     string `json:"device"`    // the device's name when the session opened
	DeviceID   string `json:"device_id"` // names the device for good
	Service    string `json:"service"`
	GrantID    string `json:"grant_id"`
	TokenID    string `json:"token_id,omitempty"` // the broker token it was opened with, if any
	ClientAddr string `json:"client_address"`
	BrokerID   string `json:"broker_id"` // the broker that carries it (holds the device)
	// ServedBy is the broker of the fleet the person's connect reached,
	// when another than BrokerID carried it there (brokerlink).
	ServedBy  string    `json:"served_by,omitempty"`
	Start     time.Time `json:"start"`
	End       time.Time `json:"end,omitzero"` // zero while open
	BytesIn   int64     `json:"bytes_in"`     // from the person to the device
	BytesOut  int64     `json:"bytes_out"`    // from the device to the person
	EndReason EndReason `json:"end_reason,omitempty"`
	// The device's tunnel drops the session lived through (a reconnect:
	// roaming, a new handshake, a connector restart): how many the device
	// came back from, and the streams in flight they cut. A drop the
	// device did not come back from ends the session device_closed; its
	// cut streams are counted too.
	DeviceReconnects int `json:"device_reconnects"`
	StreamsCut       int `json:"streams_cut"`
}

// SessionReconnect is a session's device back after its tunnel dropped,
// as the record keeps it (AuditSessionDeviceReconnected).
type SessionReconnect struct {
	Reconnects int           // the session's device reconnects, this one included
	StreamsCut int           // the streams drops have cut in the session so far
	Cut        int           // of those, the ones not in an earlier event: this drop's
	Away       time.Duration // how long the device was away
}

// Open reports whether the session has not ended.
func (s *Session) Open() bool { return s.End.IsZero() }

// Audit actions on sessions: the sessions table is the record, and these
// events put each start and end in the hash chain too.
const (
	AuditSessionStart = "session.start"
	AuditSessionEnd   = "session.end"
	// AuditSessionEndAsked: an admin asked for a session to end; details:
	// why, in the admin's words. The end itself follows as session.end.
	AuditSessionEndAsked = "session.end_asked"
	// AuditSessionDeviceReconnected: the session's device came back after
	// its tunnel dropped, and the session went on; details: device,
	// streams_cut (by this drop), away, device_reconnects and
	// streams_cut_total (the session's so far).
	AuditSessionDeviceReconnected = "session.device_reconnected"
)

// SessionFilter selects sessions for a store's Sessions. Zero fields
// select everything.
type SessionFilter struct {
	Device  string    // by the device's name when the session opened
	User    string    // by email
	Service string    // by service name
	GrantID string    // the sessions one grant let through
	Since   time.Time // started at or after
	Until   time.Time // started before
	Open    bool      // only sessions not ended
	// EndReason selects ended sessions that ended for this reason.
	EndReason EndReason
	// Limit is the most sessions returned, newest first. Default and
	// maximum 1000.
	Limit int
}
