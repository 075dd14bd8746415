package main

import (
	"context"
	"fmt"
	"io"
	"net"
	"runtime"

	"github.com/fieldpass/fieldpass"
)

// checkTarget validates DEVICE and SERVICE; DEVICE may carry the
// .fieldpass suffix of "fieldpass config ssh" (%n there).
func checkTarget(fs *flagSet, device, service string) (string, error) {
	_, device, err := splitDestination(device)
	if err != nil {
		return "", fs.fail("%s", message(err))
	}
	if err := fieldpass.ValidateServiceName(service); err != nil {
		return "", fs.fail("%s", message(err))
	}
	return device, nil
}

func (e *env) proxy(ctx context.Context, args []string) error {
	fs := e.flagSet("proxy DEVICE SERVICE", `Connects stdin and stdout to SERVICE on DEVICE through the broker, for
ssh's ProxyCommand:

  ssh -o ProxyCommand="fieldpass proxy %n ssh" -o HostKeyAlias=pump-7.fieldpass root@pump-7

End of input is passed on as a half-close. Exits non-zero with the
broker's reason when it refuses the session or cuts it (for example
"session ended: grant_expired").`)
	socket := fs.String("socket", "", "join the session fieldpass ssh opened, at this unix socket `PATH` (set by fieldpass ssh)")
	pos, err := fs.parse(args, 2, 2)
	if err != nil {
		return err
	}
	device, err := checkTarget(fs, pos[0], pos[1])
	if err != nil {
		return err
	}
	if *socket != "" {
		return pipeSocket(*socket, e.stdin, e.stdout)
	}
	s, err := e.connect(ctx, device, pos[1])
	if err != nil {
		return err
	}
	return pipeStdio(ctx, s, e.stdin, e.stdout)
}

func (e *env) forward(ctx context.Context, args []string) error {
	fs := e.flagSet("forward DEVICE SERVICE [LOCAL_ADDR]", `Listens on LOCAL_ADDR and carries each connection to it to SERVICE on
DEVICE. All connections travel in one session opened at the start, so
each costs about what a bare tunnel stream costs. LOCAL_ADDR defaults to
127.0.0.1 and a free port; a bare port ("8080" or ":8080") is on 127.0.0.1
too, and other hosts must be named ("0.0.0.0:8080").

The first line on stdout is "forwarding ADDR to DEVICE/SERVICE". fieldpass
runs until interrupted, or until the broker ends the session, which it
reports (for example "session ended: grant_revoked") with exit status 1.`)
	pos, err := fs.parse(args, 2, 3)
	if err != nil {
		return err
	}
	device, err := checkTarget(fs, pos[0], pos[1])
	if err != nil {
		return err
	}
	local := ""
	if len(pos) == 3 {
		local = pos[2]
	}
	addr, err := forwardAddr(local)
	if err != nil {
		return fs.fail("%v", err)
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return err
	}
	defer ln.Close()
	s, err := e.connect(ctx, device, pos[1])
	if err != nil {
		return err
	}
	if !isLoopbackAddr(ln.Addr()) {
		fmt.Fprintf(e.stderr, "fieldpass: warning: %s accepts connections from other hosts, which then reach %s/%s as you\n", ln.Addr(), device, pos[1])
	}
	fmt.Fprintf(e.stdout, "forwarding %s to %s/%s\n", ln.Addr(), device, pos[1])
	return forwardConns(ctx, ln, s, e.stderr)
}

// pipeSocket joins stdin and stdout to the unix socket at path, passing
// end of input on as a half-close, until the other side closes.
func pipeSocket(path string, stdin io.Reader, stdout io.Writer) error {
	c, err := net.Dial("unix", path)
	if err != nil {
		return fmt.Errorf("join fieldpass ssh's session: %w", err)
	}
	defer c.Close()
	go func() {
		io.Copy(c, stdin)
		c.(*net.UnixConn).CloseWrite()
	}()
	_, err = io.Copy(stdout, c)
	return err
}

// oneProcessor runs the Go scheduler on one processor unless GOMAXPROCS
// says otherwise. The CLI's work is handing small packets between a few
// goroutines (local socket, yamux, TLS); with more processors the
// scheduler wakes idle threads for each hand-off, which cost the forward
// 17 % of its CPU per new connection and 13 % per GiB in BenchmarkPath
// (bench/README.md), and one processor encrypts far faster than the
// device's leg carries.
func oneProcessor(getenv func(string) string) {
	if getenv("GOMAXPROCS") == "" {
		runtime.GOMAXPROCS(1)
	}
}
