package fieldpass

import "time"

// WebRequest is one HTTP request a person's browser made through a proxied
// device web UI, recorded for auditors under its session.
type WebRequest struct {
	SessionID string        `json:"session_id"`
	At        time.Time     `json:"at"`
	Method    string        `json:"method"`
	Path      string        `json:"path"` // path and query, at most MaxWebPath bytes
	Status    int           `json:"status"`
	BytesIn   int64         `json:"bytes_in"`  // from the person to the device
	BytesOut  int64         `json:"bytes_out"` // from the device to the person
	Duration  time.Duration `json:"duration"`
	Upgrade   bool          `json:"upgrade,omitempty"` // a WebSocket; Duration is its life
}

// MaxWebPath bounds a recorded path: longer ones are cut, marked with "…".
const MaxWebPath = 2048
