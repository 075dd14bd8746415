package fieldpass

import "time"

// StaleOptions selects what a stale report calls forgotten. Zero values mean
// the defaults.
type StaleOptions struct {
	// NotSeen: live devices last seen longer ago than this (default 30 days).
	NotSeen time.Duration
	// NoSession: live devices, enrolled before this long ago, with no
	// session started since (default 90 days).
	NoSession time.Duration
}

// StaleReport lists what looks forgotten, each item with the command that
// acts on it.
type StaleReport struct {
	At           time.Time       `json:"at"`
	NotSeen      []StaleItem     `json:"devices_not_seen"`
	NoSession    []StaleItem     `json:"devices_no_session"`
	UnusedGrants []StaleItem     `json:"grants_never_used"`
	IdleVendors  []StaleItem     `json:"vendors_without_live_grant"`
	Options      StaleOptionsOut `json:"options"`
}

// StaleOptionsOut echoes the thresholds a report was made with.
type StaleOptionsOut struct {
	NotSeenSeconds   int64 `json:"not_seen_seconds"`
	NoSessionSeconds int64 `json:"no_session_seconds"`
}

// StaleItem is one forgotten thing: a device name, grant id or email; why;
// and the command that acts on it (empty when nothing is left to do, such as
// a grant that ended unused).
type StaleItem struct {
	Target  string    `json:"target"`
	Detail  string    `json:"detail"`
	Since   time.Time `json:"since,omitzero"` // last seen, last session, grant creation, ...
	Command string    `json:"command,omitempty"`
}
