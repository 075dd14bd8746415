package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"time"

	"github.com/fieldpass/fieldpass"
	"github.com/fieldpass/fieldpass/cmd/internal/cafile"
	"github.com/fieldpass/fieldpass/httpapi"
)

// Environment variables that let the CLI run without a saved login. Each
// one, when set, wins over the saved config.
const (
	envBroker = "FIELDPASS_BROKER"
	envToken  = "FIELDPASS_TOKEN"
	// envCAFile names a PEM file of a private CA the broker's certificate
	// is issued by, trusted besides the system's roots.
	envCAFile = "FIELDPASS_CA_FILE"
)

// savedConfig is what login writes: config.json under the user's config
// directory, mode 0600 in a 0700 directory, because it holds the token.
type savedConfig struct {
	Broker    string    `json:"broker"`
	Token     string    `json:"token,omitempty"`
	Email     string    `json:"email,omitempty"`
	ExpiresAt time.Time `json:"expires_at,omitzero"`
}

// configPath is $XDG_CONFIG_HOME/fieldpass/config.json, or
// ~/.config/fieldpass/config.json, as os.UserConfigDir has it on Unix but
// read through getenv so tests can point it elsewhere.
func (e *env) configPath() (string, error) {
	dir := ""
	if runtime.GOOS == "linux" || runtime.GOOS == "freebsd" || runtime.GOOS == "openbsd" || runtime.GOOS == "netbsd" {
		if x := e.getenv("XDG_CONFIG_HOME"); x != "" && filepath.IsAbs(x) {
			dir = x
		} else if h := e.getenv("HOME"); h != "" {
			dir = filepath.Join(h, ".config")
		} else {
			return "", errors.New("no config directory: neither $XDG_CONFIG_HOME nor $HOME is set (or set FIELDPASS_BROKER and FIELDPASS_TOKEN)")
		}
	} else {
		d, err := os.UserConfigDir()
		if err != nil {
			return "", fmt.Errorf("no config directory: %w", err)
		}
		dir = d
	}
	return filepath.Join(dir, "fieldpass", "config.json"), nil
}

// loadConfig reads the saved config; a missing file is an empty config.
func (e *env) loadConfig() (savedConfig, error) {
	var c savedConfig
	path, err := e.configPath()
	if err != nil {
		return c, err
	}
	b, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return c, nil
	}
	if err != nil {
		return c, fmt.Errorf("read config: %w", err)
	}
	if err := json.Unmarshal(b, &c); err != nil {
		return c, fmt.Errorf("config %s is not valid JSON (remove it and log in again): %w", path, err)
	}
	return c, nil
}

// saveConfig writes c atomically: a 0600 temporary file in the 0700
// directory, renamed over the old one, so a reader never sees half a file
// and the token is never readable by others, not even for a moment.
func (e *env) saveConfig(c savedConfig) (string, error) {
	path, err := e.configPath()
	if err != nil {
		return "", err
	}
	dir := filepath.Dir(path)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return "", fmt.Errorf("save config: %w", err)
	}
	// The directory is ours: tighten it if it was made wider by hand.
	if err := os.Chmod(dir, 0o700); err != nil {
		return "", fmt.Errorf("save config: %w", err)
	}
	b, err := json.MarshalIndent(c, "", "  ")
	if err != nil {
		return "", err
	}
	f, err := os.CreateTemp(dir, ".config-*.json") // created 0600
	if err != nil {
		return "", fmt.Errorf("save config: %w", err)
	}
	tmp := f.Name()
	defer os.Remove(tmp) // after a successful rename there is nothing to remove
	if err := f.Chmod(0o600); err != nil {
		f.Close()
		return "", fmt.Errorf("save config: %w", err)
	}
	if _, err := f.Write(append(b, '\n')); err != nil {
		f.Close()
		return "", fmt.Errorf("save config: %w", err)
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return "", fmt.Errorf("save config: %w", err)
	}
	if err := f.Close(); err != nil {
		return "", fmt.Errorf("save config: %w", err)
	}
	if err := os.Rename(tmp, path); err != nil {
		return "", fmt.Errorf("save config: %w", err)
	}
	return path, nil
}

// credentials are the broker and token a command talks to.
type credentials struct {
	Broker string
	Token  string
}

// credentials resolves the broker and token: FIELDPASS_BROKER and
// FIELDPASS_TOKEN each win over the saved config.
func (e *env) credentials() (credentials, error) {
	c := credentials{Broker: e.getenv(envBroker), Token: e.getenv(envToken)}
	if c.Broker == "" || c.Token == "" {
		saved, err := e.loadConfig()
		if err != nil {
			return c, err
		}
		if c.Broker == "" {
			c.Broker = saved.Broker
		}
		if c.Token == "" {
			c.Token = saved.Token
		}
	}
	if c.Broker == "" {
		return c, errors.New("no broker: run \"fieldpass login --broker URL\" or set FIELDPASS_BROKER")
	}
	if c.Token == "" {
		return c, errors.New("not logged in: run \"fieldpass login\" or set FIELDPASS_TOKEN")
	}
	broker, err := checkBrokerURL(c.Broker)
	if err != nil {
		return c, err
	}
	c.Broker = broker
	c.Token = strings.TrimSpace(c.Token)
	if err := fieldpass.CheckToken(c.Token); err != nil {
		return c, fmt.Errorf("FIELDPASS_TOKEN or the saved token: %s", fieldpass.ErrorMessage(err))
	}
	return c, nil
}

// checkBrokerURL returns the broker's base URL under the shared rule
// (fieldpass.ParseBrokerURL: plain http only to a loopback broker).
func checkBrokerURL(raw string) (string, error) {
	u, err := fieldpass.ParseBrokerURL(strings.TrimSpace(raw))
	if err != nil {
		return "", err
	}
	return u.String(), nil
}

// client talks to the broker as the person the credentials name.
func (e *env) client() (*httpapi.Client, error) {
	c, err := e.credentials()
	if err != nil {
		return nil, err
	}
	return e.newClient(c.Broker, c.Token)
}

// newClient is an API client for broker with token, trusting the private
// CA of FIELDPASS_CA_FILE if set.
func (e *env) newClient(broker, token string) (*httpapi.Client, error) {
	cl := httpapi.NewClient(broker, token)
	hc, err := cafile.HTTPClient(e.getenv(envCAFile), 60*time.Second)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", envCAFile, err)
	}
	cl.HTTP = hc
	return cl, nil
}
