// Package cliflag holds the flag.Value types the Fieldpass commands share.
// It imports only the standard library, so that the CLI and the connector
// can use it without pulling in the broker's dependencies.
package cliflag

import "strings"

// Strings collects a flag that may be given more than once, in order.
type Strings []string

func (s *Strings) String() string { return strings.Join(*s, ",") }

// Set appends v: each use of the flag adds one value.
func (s *Strings) Set(v string) error { *s = append(*s, v); return nil }
