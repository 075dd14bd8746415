// Command fieldpass is the people's CLI for Fieldpass.
//
// This release carries the version command only: logging in, listing
// devices and opening sessions (fieldpass login, devices, ssh, forward)
// arrive with identity and grants.
package main

import (
	"fmt"
	"io"
	"os"

	"github.com/fieldpass/fieldpass"
)

func main() {
	if err := run(os.Args[1:], os.Stdout, os.Stderr); err != nil {
		fmt.Fprintf(os.Stderr, "fieldpass: %v\n", err)
		os.Exit(2)
	}
}

const usage = `fieldpass: the Fieldpass CLI.

Usage:
  fieldpass version

Sessions to devices (login, devices, ssh, forward) are not in this release.
`

func run(args []string, stdout, stderr io.Writer) error {
	if len(args) == 2 && args[0] == "version" && (args[1] == "-h" || args[1] == "--help") {
		fmt.Fprint(stdout, "Usage: fieldpass version\n\nPrints the release of this binary.\n")
		return nil
	}
	if len(args) == 1 && args[0] == "version" {
		fmt.Fprintln(stdout, fieldpass.Version)
		return nil
	}
	if len(args) == 1 && (args[0] == "help" || args[0] == "-h" || args[0] == "--help") {
		fmt.Fprint(stdout, usage)
		return nil
	}
	fmt.Fprint(stderr, usage)
	if len(args) == 0 {
		return fmt.Errorf("no command given")
	}
	return fmt.Errorf("unknown command %q", args[0])
}
