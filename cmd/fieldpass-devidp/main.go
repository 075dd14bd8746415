// Command fieldpass-devidp is a development OpenID Connect provider with a
// login form, for browser tests and the local demo: see devidp/README.md.
// It is not an identity provider for real people.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/fieldpass/fieldpass/cmd/internal/cliexit"

	"github.com/fieldpass/fieldpass"
	"github.com/fieldpass/fieldpass/cmd/internal/cliflag"
	"github.com/fieldpass/fieldpass/devidp"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := run(ctx, os.Args[1:], os.Getenv, os.Stdout, os.Stderr)
	stop()
	if err != nil && !errors.Is(err, flag.ErrHelp) {
		fmt.Fprintf(os.Stderr, "fieldpass-devidp: %s\n", cliexit.Message(err))
	}
	os.Exit(cliexit.Code(err))
}

const usage = `fieldpass-devidp: a development OpenID Connect provider with a login form.

FOR DEVELOPMENT AND TESTS ONLY: passwords may sit in the users file in the
clear, logins and tokens live in memory, and the signing key is new at every
start unless --signing-key is given.

Usage:
  fieldpass-devidp --users FILE [flags]

The users file is a JSON array (see devidp/README.md):
  [{"email": "alice@example.com", "name": "Alice", "password": "dev-only",
    "groups": ["fp-admins"], "amr": ["pwd", "otp"]}]

Flags:
`

// usageError is bad command-line input (exit 2).
type usageError = cliexit.UsageError

func run(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("fieldpass-devidp", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {
		fmt.Fprint(stderr, usage)
		fs.PrintDefaults()
	}
	var redirects cliflag.Strings
	listen := fs.String("listen", "127.0.0.1:9998", "`ADDR` to listen on")
	issuer := fs.String("issuer", "", "issuer `URL`, as relying parties are configured with it (default http://ADDR of --listen)")
	usersFile := fs.String("users", "", "users `FILE` (JSON; required)")
	clientID := fs.String("client-id", "fieldpass", "the relying party's client `ID`")
	secretFile := fs.String("client-secret-file", "", "`FILE` holding the client secret (first line)")
	secret := fs.String("client-secret", "", "the client `SECRET` (or $FIELDPASS_DEVIDP_CLIENT_SECRET); with neither this nor --client-secret-file the client is public and must use PKCE")
	fs.Var(&redirects, "redirect-uri", "a redirect `URI` the client may use, repeatable (default http://127.0.0.1:8080/auth/callback)")
	keyFile := fs.String("signing-key", "", "RSA private key `FILE` (PEM) to sign ID tokens with (default: a new key at every start)")
	allowRemote := fs.Bool("allow-remote", false, "allow a non-loopback --listen or --issuer (this provider is still for development only)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return usageError{Msg: fmt.Sprintf("unexpected argument %q (see --help)", fs.Arg(0))}
	}
	if *usersFile == "" {
		return usageError{Msg: "--users FILE is required (see --help)"}
	}
	if len(redirects) == 0 {
		redirects = cliflag.Strings{"http://127.0.0.1:8080/auth/callback"}
	}
	if *secret == "" {
		*secret = getenv("FIELDPASS_DEVIDP_CLIENT_SECRET")
	}
	if *secretFile != "" {
		if *secret != "" {
			return usageError{Msg: "give the client secret once: --client-secret-file, or --client-secret / $FIELDPASS_DEVIDP_CLIENT_SECRET"}
		}
		b, err := os.ReadFile(*secretFile)
		if err != nil {
			return fmt.Errorf("read client secret: %w", err)
		}
		first, _, _ := strings.Cut(string(b), "\n")
		if *secret = strings.TrimSpace(first); *secret == "" {
			return usageError{Msg: fmt.Sprintf("client secret file %s is empty", *secretFile)}
		}
	}

	host, _, err := net.SplitHostPort(*listen)
	if err != nil {
		return usageError{Msg: fmt.Sprintf("--listen %q: want HOST:PORT", *listen)}
	}
	// An empty host listens on every interface.
	if !fieldpass.IsLoopbackHost(host) && !*allowRemote {
		return usageError{Msg: fmt.Sprintf("--listen %s is not a loopback address: this provider is for development; add --allow-remote if you mean it", *listen)}
	}
	if *issuer != "" {
		u, err := url.Parse(*issuer)
		if err != nil || u.Host == "" {
			return usageError{Msg: fmt.Sprintf("--issuer %q: want http(s)://HOST[:PORT]", *issuer)}
		}
		if !fieldpass.IsLoopbackHost(u.Hostname()) && !*allowRemote {
			return usageError{Msg: fmt.Sprintf("--issuer %s is not on a loopback host: this provider is for development; add --allow-remote if you mean it", *issuer)}
		}
	}

	users, err := devidp.ReadUsersFile(*usersFile)
	if err != nil {
		return err
	}
	cfg := devidp.Config{
		Users:   users,
		Clients: []devidp.Client{{ID: *clientID, Secret: *secret, RedirectURIs: redirects}},
		Logger:  slog.New(slog.NewTextHandler(stderr, nil)),
	}
	if *keyFile != "" {
		if cfg.SigningKey, err = devidp.ReadSigningKey(*keyFile); err != nil {
			return err
		}
	}

	// Listen first, so that --listen 127.0.0.1:0 gives the issuer its
	// real port.
	ln, err := net.Listen("tcp", *listen)
	if err != nil {
		return fmt.Errorf("listen: %w", err)
	}
	defer ln.Close()
	cfg.Issuer = *issuer
	if cfg.Issuer == "" {
		cfg.Issuer = "http://" + ln.Addr().String()
	}
	srv, err := devidp.New(cfg)
	if err != nil {
		return err
	}

	cfg.Logger.Warn("development identity provider: not for real people or real secrets")
	kind := "confidential (client_secret_basic or client_secret_post)"
	if *secret == "" {
		kind = "public (PKCE)"
	}
	fmt.Fprintf(stdout, "issuer %s\nclient %s, %s\nredirect URIs %s\nusers %d from %s\n", cfg.Issuer, *clientID, kind, redirects.String(), len(users), *usersFile)

	hs := &http.Server{Handler: srv, ReadHeaderTimeout: 10 * time.Second}
	serveErr := make(chan error, 1)
	go func() { serveErr <- hs.Serve(ln) }()
	select {
	case err := <-serveErr:
		return fmt.Errorf("serve: %w", err)
	case <-ctx.Done():
	}
	shutCtx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := hs.Shutdown(shutCtx); err != nil {
		return fmt.Errorf("shut down: %w", err)
	}
	return nil
}
