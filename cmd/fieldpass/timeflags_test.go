package main

import (
	"strings"
	"testing"
	"time"
)

var testNow = time.Date(2030, 6, 1, 12, 0, 0, 0, time.UTC)

func TestParseDuration(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want time.Duration
		ok   bool
	}{
		{"4h", 4 * time.Hour, true},
		{"90m", 90 * time.Minute, true},
		{"1h30m", 90 * time.Minute, true},
		{"7d", 7 * 24 * time.Hour, true},
		{" 2d ", 48 * time.Hour, true},
		{"0", 0, false},
		{"-1h", 0, false},
		{"0d", 0, false},
		{"d", 0, false},
		{"1.5d", 0, false},
		{"soon", 0, false},
		{"", 0, false},
		{"99999d", 0, false},
	} {
		got, err := parseDuration(tc.in)
		if (err == nil) != tc.ok || got != tc.want {
			t.Errorf("parseDuration(%q) = %v, %v; want %v, ok=%v", tc.in, got, err, tc.want, tc.ok)
		}
	}
}

func TestParseUntil(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want time.Time
		ok   bool
	}{
		{"2030-06-01T18:00:00Z", time.Date(2030, 6, 1, 18, 0, 0, 0, time.UTC), true},
		{"2030-06-01T20:00:00+02:00", time.Date(2030, 6, 1, 18, 0, 0, 0, time.UTC), true},
		{"2030-06-01T12:00:00Z", time.Time{}, false}, // now is not after now
		{"2030-05-01T00:00:00Z", time.Time{}, false},
		{"2030-06-02", time.Time{}, false},
		{"4h", time.Time{}, false},
	} {
		got, err := parseUntil(tc.in, testNow)
		if (err == nil) != tc.ok || !got.Equal(tc.want) {
			t.Errorf("parseUntil(%q) = %v, %v; want %v, ok=%v", tc.in, got, err, tc.want, tc.ok)
		}
	}
}

func TestParseSince(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want time.Time
		ok   bool
	}{
		{"24h", testNow.Add(-24 * time.Hour), true},
		{"7d", testNow.Add(-7 * 24 * time.Hour), true},
		{"30m", testNow.Add(-30 * time.Minute), true},
		{"2030-01-02T03:04:05Z", time.Date(2030, 1, 2, 3, 4, 5, 0, time.UTC), true},
		{"yesterday", time.Time{}, false},
		{"-24h", time.Time{}, false},
	} {
		got, err := parseSince(tc.in, testNow)
		if (err == nil) != tc.ok || !got.Equal(tc.want) {
			t.Errorf("parseSince(%q) = %v, %v; want %v, ok=%v", tc.in, got, err, tc.want, tc.ok)
		}
	}
}

func TestFormatDuration(t *testing.T) {
	for d, want := range map[time.Duration]string{
		4 * time.Hour:              "4h",
		90 * time.Minute:           "1h30m",
		10 * time.Minute:           "10m",
		10 * time.Second:           "10s",
		72 * time.Hour:             "3d",
		25 * time.Hour:             "25h",
		time.Hour + 10*time.Second: "1h0m10s",
		0:                          "0s",
	} {
		if got := formatDuration(d); got != want {
			t.Errorf("formatDuration(%v) = %q, want %q", d, got, want)
		}
	}
}

// The 1000-day cap holds whatever the unit, and says what it is.
func TestParseDurationCap(t *testing.T) {
	for _, in := range []string{"3650d", "1001d", "24001h"} {
		_, err := parseDuration(in)
		if err == nil || !strings.Contains(err.Error(), "longer than 1000d") {
			t.Errorf("%s: got %v, want refused as longer than 1000d", in, err)
		}
	}
	if d, err := parseDuration("1000d"); err != nil || d != 1000*24*time.Hour {
		t.Errorf("1000d: %v, %v", d, err)
	}
}
