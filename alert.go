package fieldpass

import "time"

// AlertKind is what an alert is about (alerts lists the kinds it raises:
// device_offline, endpoint_changed, ...). It is declared here, not in
// alerts, because the store keeps the kind of every dead letter and must
// not import the package that delivers alerts.
type AlertKind string

// DeadLetter is an alert whose webhook delivery was given up on (too many
// attempts, too old, or still queued when the broker stopped), kept so
// that an operator can see what was missed and deliver it again.
type DeadLetter struct {
	ID        string // the delivery id, the same on every attempt
	Kind      AlertKind
	Payload   []byte // the JSON body that was (or would have been) sent
	Attempts  int
	LastError string
	CreatedAt time.Time // when the alert was raised
	FailedAt  time.Time // when it was given up

	// Replays counts the times an operator re-delivered it (fieldpass-broker
	// alerts replay), ReplayedAt is the last; read from the store, ignored
	// when a dead letter is recorded.
	Replays    int
	ReplayedAt time.Time
}

// DeadLetterFilter selects dead letters for a store's AlertDeadLetters.
// The zero value selects all.
type DeadLetterFilter struct {
	IDs        []string  // only these delivery ids (none: any)
	Since      time.Time // only those given up at or after Since (zero: any)
	Unreplayed bool      // only those never replayed
	Limit      int       // at most this many, the newest (0: no limit)
}

// AuditAlertReplay is the audit action of an operator re-delivering a dead
// letter; its target is "alert:ID".
const AuditAlertReplay = "alert.replay"
