package fieldpass

import (
	"encoding/csv"
	"io"
	"strconv"
	"strings"
	"time"
)

// SessionCSVHeader names the columns of WriteSessionsCSV, the one CSV form
// of sessions: the CLI's --csv and the portal's export alike.
var SessionCSVHeader = []string{"id", "user", "device", "service", "grant_id", "client_address",
	"start", "end", "bytes_in", "bytes_out", "end_reason", "broker_id"}

// WriteSessionsCSV writes ss as CSV with SessionCSVHeader: times in RFC
// 3339, UTC, an open session's end and end reason empty. A cell a
// spreadsheet would run as a formula (=, +, -, @, tab or CR first) gets a
// quote in front: people and devices name these strings.
func WriteSessionsCSV(w io.Writer, ss []*Session) error {
	cw := csv.NewWriter(w)
	cw.Write(SessionCSVHeader)
	for _, s := range ss {
		cw.Write(csvCells(s.ID, s.User, s.Device, s.Service, s.GrantID, s.ClientAddr, csvTime(s.Start), csvTime(s.End),
			strconv.FormatInt(s.BytesIn, 10), strconv.FormatInt(s.BytesOut, 10), string(s.EndReason), s.BrokerID))
	}
	cw.Flush()
	return cw.Error()
}

func csvTime(t time.Time) string {
	if t.IsZero() {
		return ""
	}
	return t.UTC().Format(time.RFC3339)
}

// csvCells defuses cells a spreadsheet would read as a formula.
func csvCells(cells ...string) []string {
	for i, c := range cells {
		if c != "" && strings.ContainsRune("=+-@\t\r", rune(c[0])) {
			cells[i] = "'" + c
		}
	}
	return cells
}
