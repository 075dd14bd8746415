package main

import (
	"encoding/json"
	"strings"
	"testing"

	"github.com/fieldpass/fieldpass/cmd/internal/cliexit"

	"github.com/fieldpass/fieldpass"
)

func TestDeviceKeepalive(t *testing.T) {
	dbURL, _, _ := enrolledDevice(t, "pump-7")
	listJSON := func() []fieldpass.Device {
		t.Helper()
		var devs []fieldpass.Device
		out := mustRun(t, dbURL, "device", "list", "--json")
		if err := json.Unmarshal([]byte(out), &devs); err != nil || len(devs) != 1 {
			t.Fatalf("device list --json: %v\n%s", err, out)
		}
		return devs
	}
	column := func() string {
		t.Helper()
		lines := strings.Split(strings.TrimSpace(mustRun(t, dbURL, "device", "list")), "\n")
		head, row := strings.Fields(lines[0]), strings.Fields(lines[1])
		for i, h := range head {
			if h == "KEEPALIVE" {
				// LAST SEEN is two words in the header, one ("never") here.
				return row[i-1]
			}
		}
		t.Fatalf("no KEEPALIVE column in %q", lines[0])
		return ""
	}

	if got := column(); got != "default" {
		t.Errorf("KEEPALIVE before any setting: got %q, want default", got)
	}
	if out := mustRun(t, dbURL, "device", "keepalive", "pump-7", "2m"); out != "device pump-7 keepalive is now 2m\n" {
		t.Errorf("set 2m: got %q", out)
	}
	if got := column(); got != "2m" {
		t.Errorf("KEEPALIVE after 2m: got %q", got)
	}
	if got := listJSON()[0].KeepaliveSeconds; got != 120 {
		t.Errorf("keepalive_seconds after 2m: got %d, want 120", got)
	}
	if out := mustRun(t, dbURL, "device", "list", "--json"); !strings.Contains(out, `"keepalive_seconds": 120`) {
		t.Errorf("device list --json does not show keepalive_seconds: %s", out)
	}
	for _, clear := range []string{"default", "0"} {
		mustRun(t, dbURL, "device", "keepalive", "pump-7", "45s")
		if out := mustRun(t, dbURL, "device", "keepalive", "pump-7", clear); !strings.Contains(out, "connector's own") {
			t.Errorf("clear with %q: got %q", clear, out)
		}
		if got := column(); got != "default" {
			t.Errorf("KEEPALIVE after %s: got %q", clear, got)
		}
		if out := mustRun(t, dbURL, "device", "list", "--json"); strings.Contains(out, "keepalive_seconds") {
			t.Errorf("cleared keepalive still in JSON: %s", out)
		}
	}
	// Each change is audited as the operator; set 2m, 45s, default, 45s, 0.
	var n int
	if err := superuser(t, dbURL).QueryRow(t.Context(), `SELECT count(*) FROM audit_events WHERE action = 'device.keepalive' AND actor LIKE 'operator:%'`).Scan(&n); err != nil || n != 5 {
		t.Errorf("device.keepalive audit events by an operator: got %d, %v; want 5", n, err)
	}

	for _, tt := range []struct {
		name string
		args []string
		msg  string
		code int
	}{
		{"too short", []string{"pump-7", "5s"}, "whole seconds from 10s to 1h, or default", 2},
		{"too long", []string{"pump-7", "2h"}, "whole seconds from 10s to 1h, or default", 2},
		{"not a duration", []string{"pump-7", "often"}, "want a duration", 2},
		{"missing duration", []string{"pump-7"}, "missing argument", 2},
		{"unknown device", []string{"nope", "1m"}, `device "nope" not found`, 1},
	} {
		t.Run(tt.name, func(t *testing.T) {
			_, _, err := runCmd(t, dbURL, append([]string{"device", "keepalive"}, tt.args...)...)
			if err == nil || !strings.Contains(cliexit.Message(err), tt.msg) || cliexit.Code(err) != tt.code {
				t.Fatalf("got %v (exit %d), want %q, exit %d", err, cliexit.Code(err), tt.msg, tt.code)
			}
		})
	}
	t.Run("help", func(t *testing.T) {
		help, _, _ := runCmd(t, dbURL, "device", "keepalive", "-h")
		for _, want := range []string{"device keepalive NAME DURATION|default", "overrides the connector's flag", "NAT UDP timeout"} {
			if !strings.Contains(help, want) {
				t.Errorf("help lacks %q:\n%s", want, help)
			}
		}
		out, _, _ := runCmd(t, dbURL, "device", "-h")
		if !strings.Contains(out, "device keepalive NAME") {
			t.Errorf("device usage lacks keepalive:\n%s", out)
		}
	})
}
