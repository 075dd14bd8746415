package fieldpass

import "errors"

// DenyReason says why a request to reach a device (a connect) was refused:
// a small, closed vocabulary, like EndReason for sessions that ended. It is
// for machines (metrics labels, the audit of refused attempts); the error's
// code and message stay what people see.
type DenyReason string

// Refusal reasons. The comment gives the error code each is refused with.
const (
	DenyInvalid          DenyReason = "invalid"           // invalid: a malformed device or service name
	DenyUnauthenticated  DenyReason = "unauthenticated"   // forbidden: no caller
	DenyUserDisabled     DenyReason = "user_disabled"     // forbidden: the user is disabled
	DenyDeviceUnknown    DenyReason = "device_unknown"    // not_found: no such device (or decommissioned)
	DenyDeviceDisabled   DenyReason = "device_disabled"   // forbidden: the device is not active
	DenyMFARequired      DenyReason = "mfa_required"      // forbidden: the device's labels need a multi-factor login
	DenyNoGrant          DenyReason = "no_grant"          // forbidden: no grant covers device and service now
	DenyGrantNotStarted  DenyReason = "grant_not_started" // forbidden: the covering grant starts later
	DenyGrantExpired     DenyReason = "grant_expired"     // expired: the covering grant has ended
	DenyGrantRevoked     DenyReason = "grant_revoked"     // forbidden: the covering grant was revoked
	DenyDeviceOffline    DenyReason = "device_offline"    // unavailable: the device has no live tunnel
	DenyAuditUnavailable DenyReason = "audit_unavailable" // unavailable: the session could not be put on the record
	DenyBrokerStopping   DenyReason = "broker_stopping"   // unavailable: the broker is shutting down
	DenyInternal         DenyReason = "internal"          // internal: anything else (a bug, an unexpected failure)
)

// DenyReasons lists every refusal reason.
var DenyReasons = []DenyReason{
	DenyInvalid, DenyUnauthenticated, DenyUserDisabled, DenyDeviceUnknown, DenyDeviceDisabled,
	DenyMFARequired, DenyNoGrant, DenyGrantNotStarted, DenyGrantExpired, DenyGrantRevoked,
	DenyDeviceOffline, DenyAuditUnavailable, DenyBrokerStopping, DenyInternal,
}

// Refusal is a refused connect: why (Reason), and the error people see
// (Err, usually an *Error). It wraps Err, so ErrorCode and ErrorMessage
// answer as for Err alone; only DenyReasonOf looks at Reason.
type Refusal struct {
	Reason DenyReason
	Err    error
}

func (r *Refusal) Error() string { return r.Err.Error() }

// Unwrap returns the error people see.
func (r *Refusal) Unwrap() error { return r.Err }

// Deny marks err as a refusal for reason, leaving its code and message as
// they are; nil stays nil. Marking an error again changes its reason: the
// outermost mark is the one DenyReasonOf reports.
func Deny(reason DenyReason, err error) error {
	if err == nil {
		return nil
	}
	return &Refusal{Reason: reason, Err: err}
}

// DenyReasonOf returns the reason of the first Refusal in err's chain, or ""
// when err is no refusal (or nil).
func DenyReasonOf(err error) DenyReason {
	var r *Refusal
	if errors.As(err, &r) {
		return r.Reason
	}
	return ""
}
