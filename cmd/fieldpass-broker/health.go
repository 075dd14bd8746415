package main

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"strings"
	"time"
)

// health asks a running broker whether it is ready, for container
// healthchecks: the image has no shell and no curl to ask with.
func (e env) health(ctx context.Context, args []string) error {
	fs := e.flagSet("health", "health [--url http://127.0.0.1:8080/readyz]\n\nExits 0 when the broker answers 200 at its readiness URL (Postgres reachable, WireGuard up), 1 otherwise.\nFor container healthchecks, where the image has no shell or curl.")
	url := fs.String("url", "http://127.0.0.1:8080/readyz", "the broker's readiness `URL`")
	timeout := fs.Duration("timeout", 5*time.Second, "how long to wait for the answer")
	if err := parse(fs, args, 0); err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(ctx, *timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, *url, nil)
	if err != nil {
		return usageError{Msg: fmt.Sprintf("--url %q: %v", *url, err)}
	}
	// Straight to the broker: no proxy from the environment.
	resp, err := (&http.Client{Transport: &http.Transport{}}).Do(req)
	if err != nil {
		return fmt.Errorf("broker not reachable at %s: %w", *url, err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 512))
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("broker not ready: %s answered %s: %s", *url, resp.Status, strings.TrimSpace(string(body)))
	}
	fmt.Fprintln(e.stdout, "ready")
	return nil
}
