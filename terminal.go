package fieldpass

import "time"

// SSHHostKey is the host key a device's SSH service showed the first time
// the broker's terminal reached it: later sessions must see the same key.
type SSHHostKey struct {
	DeviceID    string    `json:"device_id"`
	Service     string    `json:"service"`
	Type        string    `json:"type"` // ssh-ed25519, ...
	Key         []byte    `json:"-"`    // SSH wire form
	Fingerprint string    `json:"fingerprint"`
	PinnedAt    time.Time `json:"pinned_at"`
	PinnedBy    string    `json:"pinned_by"` // an audit actor
}

// Audit actions of the browser terminal's host keys.
const (
	// AuditHostKeyPin: a host key pinned on first use; details: device,
	// service, fingerprint.
	AuditHostKeyPin = "ssh_host_key.pin"
	// AuditHostKeyAccept: an admin accepted a changed host key; details:
	// device, service, old and new fingerprints.
	AuditHostKeyAccept = "ssh_host_key.accept"
	// AuditRetention: recordings and web request logs past their retention
	// deleted; details: before, recordings, web_requests.
	AuditRetention = "retention.apply"
)
