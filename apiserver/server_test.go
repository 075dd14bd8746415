package apiserver_test

import (
	"bufio"
	"context"
	"io"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/fieldpass/fieldpass/apiserver"
)

// TestStalledClientsDoNotBlockOthers: a client that stalls mid-header, or
// sends an endless header, is cut off while others are served.
func TestStalledClientsDoNotBlockOthers(t *testing.T) {
	_, api := newServer(t, 100)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	// Reuse the test server's handler behind our production settings.
	srv := apiserver.NewHTTPServer(api.Config.Handler, slog.New(slog.DiscardHandler))
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- apiserver.Serve(ctx, ln, srv) }()
	defer func() { cancel(); <-done }()
	addr := ln.Addr().String()

	// Ten slow clients, each sending half a request line and stopping.
	var slow []net.Conn
	for i := 0; i < 10; i++ {
		c, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		io.WriteString(c, "POST /api/v1/enr")
		slow = append(slow, c)
	}
	// Others are still served at once.
	start := time.Now()
	resp, err := http.Get("http://" + addr + "/healthz")
	if err != nil || resp.StatusCode != 200 {
		t.Fatalf("healthz while slow clients wait: %v %v", resp, err)
	}
	resp.Body.Close()
	if d := time.Since(start); d > time.Second {
		t.Fatalf("healthz took %s with slow clients around", d)
	}
	// The stalled ones are cut off after the header timeout.
	slow[0].SetReadDeadline(time.Now().Add(15 * time.Second))
	if _, err := io.ReadAll(slow[0]); err != nil {
		t.Fatalf("stalled client was not closed by the server: %v", err)
	}

	// An endless header is refused, not buffered.
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	go func() {
		io.WriteString(c, "GET /healthz HTTP/1.1\r\nHost: x\r\nX-Long: ")
		chunk := strings.Repeat("a", 4096)
		for i := 0; i < 64; i++ {
			if _, err := io.WriteString(c, chunk); err != nil {
				return
			}
		}
	}()
	c.SetReadDeadline(time.Now().Add(10 * time.Second))
	line, err := bufio.NewReader(c).ReadString('\n')
	if err != nil || !strings.Contains(line, "431") {
		t.Fatalf("endless header: got %q, %v; want 431", line, err)
	}
}
