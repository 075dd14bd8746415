//go:build linux

package e2e_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/fieldpass/fieldpass"
)

const racers = 50

// TestEnrollRace: many enrolments with one token, at once, through the real
// broker: exactly one wins and the token is used once.
func TestEnrollRace(t *testing.T) {
	t.Parallel()
	b := startBroker(t)

	t.Run("processes", func(t *testing.T) {
		// All processes come from 127.0.0.1, so the broker's per-address
		// limiter (burst 10, then 1/s) answers most of them "too many
		// requests" before they reach the database: about ten really race.
		// The subtest below takes the limiter out of play.
		tok := b.token("racer")
		dir := t.TempDir()
		cmds := make([]*exec.Cmd, racers)
		outs := make([]*bytes.Buffer, racers)
		errs := make([]*bytes.Buffer, racers)
		for i := range cmds {
			cmds[i] = exec.Command(bins.connector, "enroll", "--broker", b.URL(), "--token", tok,
				"--state-dir", filepath.Join(dir, fmt.Sprintf("state-%02d", i)))
			cmds[i].Env = env()
			outs[i], errs[i] = new(bytes.Buffer), new(bytes.Buffer)
			cmds[i].Stdout, cmds[i].Stderr = outs[i], errs[i]
			cmds[i].SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
		}
		start := time.Now()
		for i, c := range cmds {
			if err := c.Start(); err != nil {
				for _, c := range cmds[:i] {
					c.Process.Kill()
					c.Wait()
				}
				t.Fatal(err)
			}
		}
		var won, used, limited int
		winner := -1
		for i, c := range cmds {
			err := c.Wait()
			msg := strings.TrimSpace(errs[i].String())
			switch {
			case err == nil && strings.Contains(outs[i].String(), "enrolled as racer"):
				won++
				winner = i
			case err != nil && strings.Contains(msg, "already used"):
				used++
			case err != nil && strings.Contains(msg, "too many requests"):
				limited++
			default:
				t.Errorf("enrol %d: %v\nstdout %q\nstderr %q", i, err, outs[i], errs[i])
			}
			if err != nil {
				checkOneLineError(t, result{cmd: "enroll", stdout: outs[i].String(), stderr: errs[i].String(), code: 1}, "fieldpass-connector: ", "")
			}
		}
		t.Logf("%d enrol processes in %s: %d enrolled, %d refused as token already used, %d refused by the rate limiter",
			racers, time.Since(start).Round(time.Millisecond), won, used, limited)
		if won != 1 {
			t.Fatalf("%d enrolments succeeded, want exactly 1", won)
		}
		if used == 0 {
			t.Logf("no enrolment lost the race in the database: the limiter let only the winner through")
		}
		for i := range cmds {
			names, ok := dirEntries(filepath.Join(dir, fmt.Sprintf("state-%02d", i)))
			if i == winner && len(names) != 2 {
				t.Errorf("winner's state dir holds %v", names)
			}
			if i != winner && ok {
				t.Errorf("loser %d left a state dir holding %v", i, names)
			}
		}
		checkTokenUsedOnce(t, b, "racer")
	})

	t.Run("http from distinct addresses", func(t *testing.T) {
		// The same race over HTTP, each request from its own loopback
		// address (127.0.0.10 and up) so that each has its own limiter
		// bucket, all sent at once over connections opened beforehand.
		tok := b.token("racer-http")
		clients := make([]*http.Client, racers)
		for i := range clients {
			src := &net.TCPAddr{IP: net.IPv4(127, 0, 0, byte(10+i))}
			tr := &http.Transport{Proxy: nil, DialContext: (&net.Dialer{LocalAddr: src}).DialContext}
			clients[i] = &http.Client{Timeout: 30 * time.Second, Transport: tr}
			defer tr.CloseIdleConnections()
			resp, err := clients[i].Get(b.URL() + "/healthz")
			if err != nil {
				t.Skipf("cannot connect from %s (needs 127.0.0.0/8 on lo): %v", src.IP, err)
			}
			io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
		}
		type answer struct {
			status int
			body   string
			err    error
		}
		answers := make([]answer, racers)
		var wg sync.WaitGroup
		ready := make(chan struct{})
		for i := range clients {
			wg.Add(1)
			go func() {
				defer wg.Done()
				var key [32]byte
				rand.Read(key[:])
				body, _ := json.Marshal(map[string]string{
					"token":             tok,
					"public_key":        base64.StdEncoding.EncodeToString(key[:]),
					"connector_version": "e2e-race",
				})
				req, _ := http.NewRequest(http.MethodPost, b.URL()+"/api/v1/enroll", bytes.NewReader(body))
				req.Header.Set("Content-Type", "application/json")
				<-ready
				resp, err := clients[i].Do(req)
				if err != nil {
					answers[i] = answer{err: err}
					return
				}
				rb, _ := io.ReadAll(resp.Body)
				resp.Body.Close()
				answers[i] = answer{status: resp.StatusCode, body: string(rb)}
			}()
		}
		start := time.Now()
		close(ready)
		wg.Wait()
		var ok, conflict int
		for i, a := range answers {
			var e struct{ Code, Message string }
			json.Unmarshal([]byte(a.body), &e)
			switch {
			case a.err == nil && a.status == http.StatusOK:
				ok++
			case a.err == nil && a.status == http.StatusConflict && e.Code == fieldpass.ECONFLICT && strings.Contains(e.Message, "already used"):
				conflict++
			default:
				t.Errorf("request %d: err %v, status %d, body %s", i, a.err, a.status, a.body)
			}
		}
		t.Logf("%d concurrent POSTs in %s: %d enrolled, %d refused as token already used", racers, time.Since(start).Round(time.Millisecond), ok, conflict)
		if ok != 1 {
			t.Fatalf("%d enrolments succeeded, want exactly 1", ok)
		}
		checkTokenUsedOnce(t, b, "racer-http")
	})
}

// checkTokenUsedOnce checks, in the database, that the one token made for
// name is used, and used by the one device of that name.
func checkTokenUsedOnce(t *testing.T, b *broker, name string) {
	t.Helper()
	var ids []string
	_, devs := b.devices()
	for _, d := range devs {
		if d.Name == name {
			ids = append(ids, d.ID)
		}
	}
	if len(ids) != 1 {
		t.Fatalf("device list shows %d devices named %s, want 1", len(ids), name)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	conn, err := pgx.Connect(ctx, b.dbURL)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	var tokens, usedTokens int
	var usedBy string
	err = conn.QueryRow(ctx, `
		SELECT count(*), count(used_at), coalesce(max(device_id::text), '')
		FROM enrollment_tokens WHERE device_name = $1`, name).Scan(&tokens, &usedTokens, &usedBy)
	if err != nil {
		t.Fatal(err)
	}
	if tokens != 1 || usedTokens != 1 || usedBy != ids[0] {
		t.Errorf("tokens for %s: %d, used %d, by device %q; want 1 token, used once, by %s", name, tokens, usedTokens, usedBy, ids[0])
	}
}
