// Package fieldpass holds the domain of Fieldpass: the nouns every other
// package speaks (devices, enrolment tokens and presence; users, tokens and
// the Caller; grants and access requests; sessions and their end reasons;
// audit events and their hash chain) and the error vocabulary the edges map
// to HTTP statuses and exit codes. It imports no other package of Fieldpass.
//
// The adapters (postgres, apiserver, portal, httpapi, broker, connector,
// alerts) meet in these types: what two of them exchange is defined here, so
// that neither imports the other for it. cmd/ wires them together.
package fieldpass

// Version is the release of this build, set with -ldflags "-X".
var Version = "dev"
