package connector

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net/http"
	"net/netip"
	"net/url"
	"os"
	"path/filepath"
	"time"

	"github.com/fieldpass/fieldpass"
	"github.com/fieldpass/fieldpass/tunnel"
	"github.com/fieldpass/fieldpass/wgnet"
)

// EnrollConfig is the input of Enroll. Zero values mean the defaults.
type EnrollConfig struct {
	BrokerURL string // https://broker.example.com; http only for loopback
	Token     string // single-use enrolment token (fpe_...)
	StateDir  string
	// HTTPClient defaults to one with a 30 s timeout.
	HTTPClient *http.Client
	// Rand is the key source; crypto/rand by default.
	Rand io.Reader
}

// Enroll generates the device's WireGuard key pair on the device, registers
// the public key with the broker, and writes the state. The private key never
// leaves the device. On any error nothing is written; an existing enrolment in
// StateDir is never overwritten.
func Enroll(ctx context.Context, cfg EnrollConfig) (*State, error) {
	if err := fieldpass.CheckEnrollmentToken(cfg.Token); err != nil {
		return nil, err
	}
	base, err := fieldpass.ParseBrokerURL(cfg.BrokerURL)
	if err != nil {
		return nil, err
	}
	if cfg.StateDir == "" {
		return nil, fieldpass.Errorf(fieldpass.EINVALID, "--state-dir is required")
	}
	if _, err := os.Stat(filepath.Join(cfg.StateDir, stateFile)); err == nil {
		return nil, fieldpass.Errorf(fieldpass.ECONFLICT, "%s already holds an enrolment; use an empty --state-dir (or remove it after decommissioning the device)", cfg.StateDir)
	} else if !errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("check state dir: %w", err)
	}
	if err := checkWritable(cfg.StateDir); err != nil {
		return nil, err
	}
	rnd := cfg.Rand
	if rnd == nil {
		rnd = rand.Reader
	}
	priv, err := wgnet.GenerateKey(rnd)
	if err != nil {
		return nil, fmt.Errorf("generate key: %w", err)
	}
	client := cfg.HTTPClient
	if client == nil {
		client = &http.Client{Timeout: 30 * time.Second}
	}
	body, _ := json.Marshal(tunnel.EnrollRequest{Token: cfg.Token, PublicKey: priv.Public().String(), ConnectorVersion: fieldpass.Version})
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, base.JoinPath(tunnel.EnrollPath).String(), bytes.NewReader(body))
	if err != nil {
		return nil, err
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := client.Do(req)
	if err != nil {
		return nil, fieldpass.Errorf(fieldpass.EUNAVAILABLE, "cannot reach broker at %s: %w", base.Redacted(), unwrapURLError(err))
	}
	defer resp.Body.Close()
	rb, err := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
	if err != nil {
		return nil, fieldpass.Errorf(fieldpass.EUNAVAILABLE, "read broker answer: %w", err)
	}
	if resp.StatusCode != http.StatusOK {
		var e tunnel.ErrorResponse
		if json.Unmarshal(rb, &e) == nil && e.Message != "" {
			return nil, fieldpass.Errorf(e.Code, "%s", e.Message)
		}
		return nil, fieldpass.Errorf(fieldpass.EUNAVAILABLE, "broker answered %s", resp.Status)
	}
	var er tunnel.EnrollResponse
	if err := json.Unmarshal(rb, &er); err != nil {
		return nil, fmt.Errorf("decode broker answer: %w", err)
	}
	s := &State{
		BrokerURL:  base.String(),
		DeviceID:   er.DeviceID,
		DeviceName: er.DeviceName,
		BrokerPort: er.BrokerPort,
		BrokerKey:  er.BrokerKey,
		Endpoints:  er.Endpoints,
		MTU:        er.MTU,
		PrivateKey: priv,
	}
	if s.TunnelAddress, err = netip.ParseAddr(er.TunnelAddress); err != nil {
		return nil, fmt.Errorf("broker sent a bad tunnel address: %w", err)
	}
	if s.BrokerAddress, err = netip.ParseAddr(er.BrokerAddress); err != nil {
		return nil, fmt.Errorf("broker sent a bad broker address: %w", err)
	}
	if err := s.save(cfg.StateDir); err != nil {
		return nil, fmt.Errorf("enrolled as %s but could not save the state (decommission the device and enrol again): %w", s.DeviceName, err)
	}
	return s, nil
}

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

func unwrapURLError(err error) error {
	var ue *url.Error
	if errors.As(err, &ue) {
		return ue.Err
	}
	return err
}
