package connector

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"net/netip"
	"os"
	"path/filepath"

	"github.com/fieldpass/fieldpass/tunnel"
	"github.com/fieldpass/fieldpass/wgnet"
)

// State is what enrolment leaves on the device: its identity and how to reach
// the broker. It lives in a 0700 directory as two 0600 files: the private key
// alone in private.key (so it can be kept on a secure element later, and is
// never part of a JSON dump) and the rest in state.json.
type State struct {
	BrokerURL     string     `json:"broker_url"`
	DeviceID      string     `json:"device_id"`
	DeviceName    string     `json:"device_name"`
	TunnelAddress netip.Addr `json:"tunnel_address"`
	BrokerAddress netip.Addr `json:"broker_address"`
	BrokerPort    uint16     `json:"broker_port"`
	BrokerKey     string     `json:"broker_public_key"`
	Endpoints     []string   `json:"endpoints"`
	MTU           int        `json:"mtu"`
	PrivateKey    wgnet.Key  `json:"-"`
}

const (
	stateFile = "state.json"
	keyFile   = "private.key"
)

// ErrNotEnrolled is returned by LoadState for a directory without state.
var ErrNotEnrolled = errors.New("not enrolled")

// LoadState reads the state written by Enroll.
func LoadState(dir string) (*State, error) {
	b, err := os.ReadFile(filepath.Join(dir, stateFile))
	if errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("%w: no %s in %s (run fieldpass-connector enroll first)", ErrNotEnrolled, stateFile, dir)
	}
	if err != nil {
		return nil, fmt.Errorf("read state: %w", err)
	}
	var s State
	if err := json.Unmarshal(b, &s); err != nil {
		return nil, fmt.Errorf("read state %s: %w", filepath.Join(dir, stateFile), err)
	}
	kb, err := os.ReadFile(filepath.Join(dir, keyFile))
	if err != nil {
		return nil, fmt.Errorf("read private key: %w", err)
	}
	if s.PrivateKey, err = wgnet.ParseKey(string(trimNL(kb))); err != nil {
		return nil, fmt.Errorf("read private key %s: %w", filepath.Join(dir, keyFile), err)
	}
	if _, err := tunnel.ParseID(s.DeviceID); err != nil {
		return nil, fmt.Errorf("state %s: device id: %w", dir, err)
	}
	if !s.TunnelAddress.IsValid() || !s.BrokerAddress.IsValid() || s.BrokerPort == 0 || len(s.Endpoints) == 0 {
		return nil, fmt.Errorf("state %s is incomplete: enrol again", dir)
	}
	if _, err := wgnet.ParseKey(s.BrokerKey); err != nil {
		return nil, fmt.Errorf("state %s: broker key: %w", dir, err)
	}
	return &s, nil
}

// save writes s into dir, creating dir 0700. Each file is written to a
// temporary name and renamed, so a power cut never leaves half a state.
func (s *State) save(dir string) error {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("create state dir: %w", err)
	}
	if err := os.Chmod(dir, 0o700); err != nil {
		return fmt.Errorf("create state dir: %w", err)
	}
	if err := writeFileAtomic(filepath.Join(dir, keyFile), []byte(s.PrivateKey.String()+"\n")); err != nil {
		return err
	}
	b, err := json.MarshalIndent(s, "", "  ")
	if err != nil {
		return err
	}
	return writeFileAtomic(filepath.Join(dir, stateFile), append(b, '\n'))
}

func writeFileAtomic(path string, data []byte) error {
	tmp := path + ".tmp"
	f, err := os.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	_, err = f.Write(data)
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp, path)
	}
	if err != nil {
		os.Remove(tmp)
		return fmt.Errorf("write %s: %w", path, err)
	}
	return nil
}

func trimNL(b []byte) []byte {
	for len(b) > 0 && (b[len(b)-1] == '\n' || b[len(b)-1] == '\r' || b[len(b)-1] == ' ') {
		b = b[:len(b)-1]
	}
	return b
}
