package fieldpass_test

import (
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/fieldpass/fieldpass"
)

func TestParseDuration(t *testing.T) {
	const day = 24 * time.Hour
	for _, tc := range []struct {
		in      string
		want    time.Duration
		wantErr string // a part of the error; "" for none
	}{
		{in: "4h", want: 4 * time.Hour},
		{in: "90m", want: 90 * time.Minute},
		{in: "1h30m", want: 90 * time.Minute},
		{in: "1.5h", want: 90 * time.Minute},
		{in: "0", want: 0},
		{in: "-1h", want: -time.Hour},
		{in: "7d", want: 7 * day},
		{in: "0d", want: 0},
		{in: "+2d", want: 2 * day},
		{in: "-7d", want: -7 * day},
		{in: "007d", want: 7 * day},
		{in: "106751d", want: 106751 * day},
		{in: "106752d", wantErr: "more than 106751 days"},
		{in: "-106752d", wantErr: "more than 106751 days"},
		{in: "99999999999999999999d", wantErr: "more than 106751 days"},
		{in: "9999999999h", wantErr: `invalid duration "9999999999h"`},
		{in: "d", wantErr: "want e.g. 30m, 4h or 7d"},
		{in: "1.5d", wantErr: "want e.g. 30m, 4h or 7d"},
		{in: "1d12h", wantErr: "want e.g. 30m"},
		{in: "1h2d", wantErr: "want e.g. 30m, 4h or 7d"},
		{in: "7D", wantErr: "want e.g. 30m"},
		{in: " 7d", wantErr: "want e.g. 30m, 4h or 7d"},
		{in: "7d ", wantErr: "want e.g. 30m"},
		{in: "", wantErr: `invalid duration ""`},
		{in: "soon", wantErr: `invalid duration "soon": want e.g. 30m, 4h or 7d`},
	} {
		t.Run(tc.in, func(t *testing.T) {
			got, err := fieldpass.ParseDuration(tc.in)
			switch {
			case tc.wantErr == "" && err != nil:
				t.Fatalf("got error %v, want %v", err, tc.want)
			case tc.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tc.wantErr)):
				t.Fatalf("got %v, %v; want an error containing %q", got, err, tc.wantErr)
			case err == nil && got != tc.want:
				t.Errorf("got %v, want %v", got, tc.want)
			}
		})
	}
}

// ParseDuration reads flags and, in the API, query parameters: whatever it
// is given, it must not panic, must agree with time.ParseDuration on what
// has no "d", and must read days as whole multiples of 24 hours. The seed
// corpus is in testdata/fuzz/FuzzParseDuration.
func FuzzParseDuration(f *testing.F) {
	f.Fuzz(func(t *testing.T, s string) {
		d, err := fieldpass.ParseDuration(s)
		n, isDays := strings.CutSuffix(s, "d")
		if !isDays {
			want, wantErr := time.ParseDuration(s)
			if (err == nil) != (wantErr == nil) || d != want {
				t.Fatalf("%q: got %v, %v; time.ParseDuration says %v, %v", s, d, err, want, wantErr)
			}
			return
		}
		if err != nil {
			if d != 0 {
				t.Fatalf("%q: got %v with error %v, want 0", s, d, err)
			}
			return
		}
		days, perr := strconv.ParseInt(n, 10, 64)
		if perr != nil {
			t.Fatalf("%q: accepted as %v, but %q is no integer", s, d, n)
		}
		if d%(24*time.Hour) != 0 || int64(d/(24*time.Hour)) != days {
			t.Fatalf("%q: got %v, want %d days", s, d, days)
		}
	})
}

func TestFormatDuration(t *testing.T) {
	for _, tc := range []struct {
		d    time.Duration
		want string
	}{
		{0, "0s"}, {-time.Hour, "0s"}, {90 * time.Second, "1m30s"}, {90 * time.Minute, "1h30m"},
		{36 * time.Hour, "36h"}, {720 * time.Hour, "30d"}, {24 * time.Hour, "1d"}, {time.Minute, "1m"},
		{45 * time.Second, "45s"}, {4*time.Hour + 30*time.Minute + 5*time.Second, "4h30m5s"},
	} {
		if got := fieldpass.FormatDuration(tc.d); got != tc.want {
			t.Errorf("FormatDuration(%v) = %q, want %q", tc.d, got, tc.want)
		}
		if tc.d > 0 {
			if back, err := fieldpass.ParseDuration(fieldpass.FormatDuration(tc.d)); err != nil || back != tc.d.Round(time.Second) {
				t.Errorf("ParseDuration(FormatDuration(%v)) = %v, %v", tc.d, back, err)
			}
		}
	}
}
