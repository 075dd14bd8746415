// Package fieldpass holds the domain of Fieldpass: the nouns every other
// package speaks (devices, enrolment tokens, presence) and the error
// vocabulary the edges map to HTTP statuses and exit codes.
//
// The adapters (postgres, apiserver, portal, httpapi, broker, connector) meet in
// these types; cmd/ wires them together.
package fieldpass

// Version is the release of this build, set with -ldflags "-X".
var Version = "dev"
