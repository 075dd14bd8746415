package connector

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"

	"github.com/fieldpass/fieldpass"
)

// Enrolment writes the state the connector runs on. Two ways lead there:
// EnrollInTunnel (enroll_tunnel.go), inside WireGuard with the token's key
// pair, which the connector binary uses; and HTTPS (package httpsenroll),
// which brokers still serve for connectors before v0.5 and which links
// crypto/tls, too big for a router's flash (issue 13).

// CheckStateDir refuses a state directory that holds an enrolment already
// or cannot be written, before a token is spent.
func CheckStateDir(dir string) error {
	if dir == "" {
		return fieldpass.Errorf(fieldpass.EINVALID, "--state-dir is required")
	}
	if _, err := os.Stat(filepath.Join(dir, stateFile)); err == nil {
		return fieldpass.Errorf(fieldpass.ECONFLICT, "%s already holds an enrolment; use an empty --state-dir (or remove it after decommissioning the device)", dir)
	} else if !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("check state dir: %w", err)
	}
	return checkWritable(dir)
}

// Save writes s as a new enrolment into dir (0700; its files 0600).
func (s *State) Save(dir string) error { return s.save(dir) }

// checkWritable makes sure the state can be saved before the token is spent:
// it probes the nearest existing directory on the way to dir.
func checkWritable(dir string) error {
	probe := dir
	for {
		fi, err := os.Stat(probe)
		if err == nil {
			if !fi.IsDir() {
				return fieldpass.Errorf(fieldpass.EINVALID, "state dir %s: %s is not a directory", dir, probe)
			}
			break
		}
		parent := filepath.Dir(probe)
		if parent == probe {
			break
		}
		probe = parent
	}
	f, err := os.CreateTemp(probe, ".fieldpass-write-check-*")
	if err != nil {
		return fieldpass.Errorf(fieldpass.EINVALID, "cannot create state dir %s: %s is not writable", dir, probe)
	}
	f.Close()
	os.Remove(f.Name())
	return nil
}

// ctxErr prefers the context's reason: a deadline closes the connection,
// and "use of closed network connection" would hide it.
func ctxErr(ctx context.Context, err error) error {
	if ctx.Err() != nil {
		return ctx.Err()
	}
	return err
}
