// Package demo runs a whole Fieldpass on this machine, on loopback, to look
// around in (make demo): a private Postgres, the development OpenID
// provider with one login per role, the broker with its portal, and two
// demo devices, each a real connector in front of a real OpenSSH server
// (where installed) and a router-like web UI (demo/routerui); with a grant
// for the engineer and an expiring one for the vendor. Its state lives in
// one directory, kept between runs; Run stops everything it started when
// its context ends.
package demo

import (
	"context"
	"crypto/rand"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/fieldpass/fieldpass"
	"github.com/fieldpass/fieldpass/demo/routerui"
	"github.com/fieldpass/fieldpass/httpapi"
)

// Config is what Run needs. Dir and Bin are required.
type Config struct {
	// Dir holds the demo's state (database, keys, logs), created if
	// missing and reused by the next run.
	Dir string
	// Bin is the directory with fieldpass-broker, fieldpass-connector,
	// fieldpass and fieldpass-devidp.
	Bin string
	// Out receives the progress and the instructions.
	Out io.Writer
	// Logger receives the demo's own diagnostics (default: discarded).
	Logger *slog.Logger
	// Environ is the environment the programs start with (default
	// os.Environ()).
	Environ []string
}

// device is one of the demo's devices.
type device struct{ name, site string }

// demoDevices are the demo's devices; the vendor's grant is on the second.
func demoDevices() []device {
	return []device{{"router-north", "north"}, {"router-south", "south"}}
}

// person is a login at the development provider.
type person struct{ role, email, name, group string }

// demoPeople are the demo's people, one per role; their groups map to
// roles through the broker's --role-map flags in startBroker.
func demoPeople() []person {
	return []person{
		{"admin", "admin@example.com", "Ada Admin", "fp-admins"},
		{"engineer", "engineer@example.com", "Eve Engineer", "field-eng"},
		{"vendor", "vendor@acme.example", "Victor Vendor", ""},
		{"auditor", "auditor@example.com", "Aude Auditor", "fp-auditors"},
		{"approver", "approver@example.com", "Abe Approver", "fp-approvers"},
	}
}

// The routers' own web UI login (the device's, not Fieldpass's).
const routerUser, routerPassword = "admin", "router"

// The vendor's grant expires, to show expiry; the engineer's is a week
// (the longest a person the broker has not seen yet may get: a vendor's).
const (
	vendorGrant   = 2 * time.Hour
	engineerGrant = 7 * 24 * time.Hour
)

// state is what a run keeps for the next one (demo.json): the ports people
// and connectors know the broker by, and the generated secrets.
type state struct {
	HTTPPort     int               `json:"http_port"`
	WGPort       int               `json:"wg_port"`
	IDPPort      int               `json:"idp_port"`
	ClientSecret string            `json:"client_secret"`
	Passwords    map[string]string `json:"passwords"` // by email
}

// run is one demo run: what it started, to stop.
type run struct {
	cfg   Config
	out   io.Writer
	log   *slog.Logger
	start time.Time
	st    state

	logs, pgURL, portalURL, brokerURL string
	pgCred                            *syscall.Credential
	sshUser, sshKey                   string // empty: no OpenSSH here
	sshMissing                        string

	mu      sync.Mutex
	procs   []*proc // stopped in reverse, Postgres (the first) last
	servers []*http.Server
}

// Run starts the demo, prints how to use it, and runs until ctx ends (or a
// program it started stops unexpectedly), then stops everything.
func Run(ctx context.Context, cfg Config) (err error) {
	if cfg.Dir == "" || cfg.Bin == "" {
		return errors.New("demo: Dir and Bin are required")
	}
	if cfg.Out == nil {
		cfg.Out = io.Discard
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.Environ == nil {
		cfg.Environ = os.Environ()
	}
	r := &run{cfg: cfg, out: cfg.Out, log: cfg.Logger, start: time.Now(), logs: filepath.Join(cfg.Dir, "logs")}
	adoptOrphans()
	for _, b := range []string{"fieldpass-broker", "fieldpass-connector", "fieldpass", "fieldpass-devidp"} {
		if !fileExists(filepath.Join(cfg.Bin, b)) {
			return fmt.Errorf("%s not found in %s: build it first (make demo does: go build -o bin/ ./cmd/...; Go from https://go.dev/dl/)", b, cfg.Bin)
		}
	}
	initdb, postgres, err := pgBinaries()
	if err != nil {
		return err
	}
	unlock, err := lockDir(cfg.Dir)
	if err != nil {
		return err
	}
	defer unlock()
	if err := os.MkdirAll(r.logs, 0o755); err != nil {
		return err
	}
	first, err := r.loadState()
	if err != nil {
		return err
	}
	fmt.Fprintf(r.out, "Fieldpass demo in %s (%s)\n", cfg.Dir, map[bool]string{true: "first run: setting it up", false: "reusing its data"}[first])

	defer func() {
		fmt.Fprintln(r.out, "\nStopping the demo...")
		if stopErr := r.stopAll(); stopErr != nil && err == nil {
			err = stopErr
		}
		fmt.Fprintln(r.out, "Demo stopped; nothing of it is running. Its data stays in "+cfg.Dir+" (make demo-reset wipes it).")
	}()

	steps := []struct {
		what string
		do   func(context.Context) (string, error)
	}{
		{"Postgres", func(ctx context.Context) (string, error) { return r.startPostgres(ctx, initdb, postgres) }},
		{"database schema", r.migrate},
		{"identity provider (fieldpass-devidp)", r.startIDP},
		{"broker and portal", r.startBroker},
		{"SSH for the devices", r.prepareSSH},
	}
	for _, d := range demoDevices() {
		steps = append(steps, struct {
			what string
			do   func(context.Context) (string, error)
		}{"device " + d.name, func(ctx context.Context) (string, error) { return r.startDevice(ctx, d.name, d.site) }})
	}
	var grants string
	steps = append(steps,
		struct {
			what string
			do   func(context.Context) (string, error)
		}{"devices online", r.waitOnline},
		struct {
			what string
			do   func(context.Context) (string, error)
		}{"grants", func(ctx context.Context) (s string, err error) {
			grants, err = r.grants(ctx)
			return "engineer and vendor", err
		}})
	for _, s := range steps {
		if ctx.Err() != nil {
			return nil
		}
		t := time.Now()
		fmt.Fprintf(r.out, "  %-40s", s.what+"...")
		note, err := s.do(ctx)
		if err != nil {
			fmt.Fprintln(r.out, " failed")
			if ctx.Err() != nil {
				return nil
			}
			return fmt.Errorf("%s: %w", s.what, err)
		}
		fmt.Fprintf(r.out, " %6s  %s\n", time.Since(t).Round(10*time.Millisecond), note)
	}
	fmt.Fprintf(r.out, "\nFieldpass demo ready in %s.\n", time.Since(r.start).Round(100*time.Millisecond))
	r.printInstructions(grants)
	return r.watch(ctx)
}

// watch waits for ctx to end, failing when a program stops on its own.
func (r *run) watch(ctx context.Context) error {
	t := time.NewTicker(500 * time.Millisecond)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
		r.mu.Lock()
		procs := append([]*proc(nil), r.procs...)
		r.mu.Unlock()
		for _, p := range procs {
			if p.exited() {
				return p.failure()
			}
		}
	}
}

func (r *run) loadState() (first bool, err error) {
	path := filepath.Join(r.cfg.Dir, "demo.json")
	b, err := os.ReadFile(path)
	switch {
	case err == nil:
		if err := json.Unmarshal(b, &r.st); err != nil {
			return false, fmt.Errorf("%s: %w (make demo-reset starts afresh)", path, err)
		}
		return false, nil
	case !errors.Is(err, os.ErrNotExist):
		return false, err
	}
	// The ports stay fixed from now on: the CLI's saved login, the
	// provider's redirect URI and each connector's enrolment name them.
	if r.st.HTTPPort, err = freePort("tcp"); err != nil {
		return false, err
	}
	if r.st.WGPort, err = freePort("udp"); err != nil {
		return false, err
	}
	if r.st.IDPPort, err = freePort("tcp"); err != nil {
		return false, err
	}
	r.st.ClientSecret = rand.Text()
	r.st.Passwords = map[string]string{}
	for _, p := range demoPeople() {
		// Short enough to type; new for every demo directory, so that
		// another user of this machine cannot guess them.
		r.st.Passwords[p.email] = p.role + "-" + strings.ToLower(rand.Text()[:6])
	}
	b, _ = json.MarshalIndent(r.st, "", "  ")
	// A .gitignore of its own keeps the default .demo/ out of git status.
	os.WriteFile(filepath.Join(r.cfg.Dir, ".gitignore"), []byte("*\n"), 0o644)
	return true, os.WriteFile(path, b, 0o600)
}

// add records p to be stopped at the end.
func (r *run) add(p *proc) {
	r.mu.Lock()
	r.procs = append(r.procs, p)
	r.mu.Unlock()
}

// stopAll stops the programs in layers: connectors first (their streams
// end, so each sshd's sessions end too), then the other servers, then
// whatever they left behind, and Postgres last, after everything using
// it. Each gets SIGTERM (Postgres SIGINT, its fast shutdown) and a grace
// period.
func (r *run) stopAll() error {
	r.mu.Lock()
	procs, servers := r.procs, r.servers
	r.procs, r.servers = nil, nil
	r.mu.Unlock()
	for _, s := range servers {
		s.Close()
	}
	var errs []error
	var pg *proc
	var connectors, others []*proc
	started := map[int]bool{}
	for _, p := range procs {
		started[p.cmd.Process.Pid] = true
		switch {
		case p.name == "postgres":
			pg = p
		case strings.HasPrefix(p.name, "connector "):
			connectors = append(connectors, p)
		default:
			others = append(others, p)
		}
	}
	for _, layer := range [][]*proc{connectors, others} {
		var wg sync.WaitGroup
		var emu sync.Mutex
		for _, p := range layer {
			wg.Add(1)
			go func() {
				defer wg.Done()
				if err := p.stop(syscall.SIGTERM, 10*time.Second); err != nil {
					emu.Lock()
					errs = append(errs, err)
					emu.Unlock()
				}
			}()
		}
		wg.Wait()
	}
	if left := stopOrphans(started, 5*time.Second); len(left) > 0 {
		r.log.Info("stopped processes left behind by the demo's programs", "processes", left)
	}
	if pg != nil {
		// SIGINT to the postmaster alone: it stops its backends itself.
		syscall.Kill(pg.cmd.Process.Pid, syscall.SIGINT)
		select {
		case <-pg.done:
		case <-time.After(30 * time.Second):
			errs = append(errs, pg.stop(syscall.SIGQUIT, 5*time.Second))
		}
	}
	return errors.Join(errs...)
}

func (r *run) env(extra ...string) []string {
	var env []string
	for _, kv := range r.cfg.Environ {
		// PG* variables meant for another server must not steer ours.
		if !strings.HasPrefix(kv, "PG") && !strings.HasPrefix(kv, "FIELDPASS_") {
			env = append(env, kv)
		}
	}
	return append(env, extra...)
}

func (r *run) bin(name string) string { return filepath.Join(r.cfg.Bin, name) }

// startPostgres creates the cluster on the first run and starts postgres
// in the foreground as the demo's child, so that it stops with the demo
// even when the demo is killed (its parent-death signal is SIGINT, a fast
// shutdown), which pg_ctl's daemon would not.
func (r *run) startPostgres(ctx context.Context, initdb, postgres string) (string, error) {
	cred, name, err := pgUser()
	if err != nil {
		return "", err
	}
	r.pgCred = cred
	dir := filepath.Join(r.cfg.Dir, "postgres")
	data, sock := filepath.Join(dir, "data"), filepath.Join(dir, "sock")
	if err := os.MkdirAll(sock, 0o700); err != nil {
		return "", err
	}
	pgLog := filepath.Join(r.logs, "postgres.log")
	if cred != nil {
		if err := reachable(filepath.Dir(dir)); err != nil {
			return "", err
		}
		for _, p := range []string{dir, sock} {
			if err := os.Chown(p, int(cred.Uid), int(cred.Gid)); err != nil {
				return "", err
			}
		}
	}
	note := "cluster reused"
	if !fileExists(filepath.Join(data, "PG_VERSION")) {
		os.RemoveAll(data) // a half-made one from an interrupted first run
		cmd := exec.CommandContext(ctx, initdb, "-D", data, "-U", "postgres", "-A", "trust", "-E", "UTF8", "--locale=C", "--no-sync", "--no-instructions")
		cmd.Env = r.env()
		cmd.SysProcAttr = &syscall.SysProcAttr{Credential: cred}
		if out, err := cmd.CombinedOutput(); err != nil {
			return "", fmt.Errorf("initdb: %v\n%s", err, out)
		}
		note = "new cluster"
	} else if err := stopStalePostmaster(data, 30*time.Second); err != nil {
		return "", err
	}
	if name != "" {
		note += ", as user " + name
	}
	port, err := freePort("tcp")
	if err != nil {
		return "", err
	}
	mark, _ := os.Stat(pgLog)
	p, err := startProc("postgres", pgLog, r.env(), cred, syscall.SIGINT, postgres, "-D", data,
		"-c", "listen_addresses=127.0.0.1", "-c", fmt.Sprintf("port=%d", port), "-c", "unix_socket_directories="+sock,
		// A demo's data is worth less than its start-up time.
		"-c", "fsync=off", "-c", "synchronous_commit=off", "-c", "full_page_writes=off")
	if err != nil {
		return "", err
	}
	r.add(p)
	var offset int64
	if mark != nil {
		offset = mark.Size()
	}
	if err := waitFor(p, 60*time.Second, "accepting connections", func() bool {
		return logSince(pgLog, offset, "ready to accept connections")
	}); err != nil {
		return "", err
	}
	r.pgURL = fmt.Sprintf("postgres://postgres@127.0.0.1:%d/postgres?sslmode=disable", port)
	return fmt.Sprintf("%s, 127.0.0.1:%d", note, port), nil
}

// logSince reports whether the file holds s after its first offset bytes.
func logSince(path string, offset int64, s string) bool {
	b, err := os.ReadFile(path)
	if err != nil || int64(len(b)) < offset {
		return false
	}
	return strings.Contains(string(b[offset:]), s)
}

func (r *run) migrate(ctx context.Context) (string, error) {
	cmd := exec.CommandContext(ctx, r.bin("fieldpass-broker"), "migrate")
	cmd.Env = r.env("FIELDPASS_DATABASE_URL=" + r.pgURL)
	if out, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("fieldpass-broker migrate: %v\n%s", err, out)
	}
	return "migrated", nil
}

func (r *run) startIDP(ctx context.Context) (string, error) {
	dir := filepath.Join(r.cfg.Dir, "idp")
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return "", err
	}
	type user struct {
		Email    string   `json:"email"`
		Name     string   `json:"name"`
		Password string   `json:"password"`
		Groups   []string `json:"groups,omitempty"`
		AMR      []string `json:"amr"`
	}
	var users []user
	for _, p := range demoPeople() {
		u := user{Email: p.email, Name: p.name, Password: r.st.Passwords[p.email], AMR: []string{"pwd", "otp"}}
		if p.group != "" {
			u.Groups = []string{p.group}
		}
		users = append(users, u)
	}
	b, _ := json.MarshalIndent(users, "", "  ")
	usersFile, secretFile := filepath.Join(dir, "users.json"), filepath.Join(dir, "client-secret")
	if err := os.WriteFile(usersFile, b, 0o600); err != nil {
		return "", err
	}
	if err := os.WriteFile(secretFile, []byte(r.st.ClientSecret+"\n"), 0o600); err != nil {
		return "", err
	}
	r.portalURL = fmt.Sprintf("http://localhost:%d", r.st.HTTPPort)
	issuer := fmt.Sprintf("http://127.0.0.1:%d", r.st.IDPPort)
	p, err := startProc("fieldpass-devidp", filepath.Join(r.logs, "devidp.log"), r.env(), nil, syscall.SIGTERM, r.bin("fieldpass-devidp"),
		"--listen", fmt.Sprintf("127.0.0.1:%d", r.st.IDPPort), "--users", usersFile,
		"--client-id", "fieldpass", "--client-secret-file", secretFile,
		"--redirect-uri", r.portalURL+"/auth/callback")
	if err != nil {
		return "", err
	}
	r.add(p)
	if err := waitFor(p, 20*time.Second, "answering", func() bool {
		return httpOK(ctx, issuer+"/.well-known/openid-configuration", "")
	}); err != nil {
		return "", err
	}
	return issuer, nil
}

// httpOK reports whether GET url answers 200 (and body, when not empty).
func httpOK(ctx context.Context, url, body string) bool {
	ctx, cancel := context.WithTimeout(ctx, time.Second)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return false
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	return resp.StatusCode == http.StatusOK && (body == "" || strings.TrimSpace(string(b)) == body)
}

func (r *run) startBroker(ctx context.Context) (string, error) {
	dir := filepath.Join(r.cfg.Dir, "broker")
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return "", err
	}
	r.brokerURL = fmt.Sprintf("http://127.0.0.1:%d", r.st.HTTPPort)
	// Listening on 127.0.0.1 but known as localhost: device web UIs then
	// get origins DEVICE--SERVICE.localhost, which browsers resolve to
	// loopback themselves (--web-domain's default for such a URL).
	p, err := startProc("fieldpass-broker", filepath.Join(r.logs, "broker.log"), r.env("FIELDPASS_DATABASE_URL="+r.pgURL), nil, syscall.SIGTERM, r.bin("fieldpass-broker"),
		"serve",
		"--http-listen", fmt.Sprintf("127.0.0.1:%d", r.st.HTTPPort),
		"--wg-listen", fmt.Sprintf("127.0.0.1:%d", r.st.WGPort),
		"--wg-endpoint", fmt.Sprintf("127.0.0.1:%d", r.st.WGPort),
		"--public-url", r.portalURL,
		"--key-file", filepath.Join(dir, "broker.key"), "--init", // the first run creates it, a second reuses it
		"--broker-id", "demo",
		"--oidc-issuer", fmt.Sprintf("http://127.0.0.1:%d", r.st.IDPPort),
		"--oidc-client-id", "fieldpass",
		"--oidc-client-secret-file", filepath.Join(r.cfg.Dir, "idp", "client-secret"),
		"--role-map", "admin=fp-admins", "--role-map", "approver=fp-admins",
		"--role-map", "engineer=field-eng", "--role-map", "approver=fp-approvers",
		"--role-map", "auditor=fp-auditors")
	if err != nil {
		return "", err
	}
	r.add(p)
	if err := waitFor(p, 30*time.Second, "healthy", func() bool { return httpOK(ctx, r.brokerURL+"/healthz", "ok") }); err != nil {
		return "", err
	}
	return r.portalURL, nil
}

// brokerCmd runs an admin command of the broker and returns its stdout.
func (r *run) brokerCmd(ctx context.Context, args ...string) (string, error) {
	cmd := exec.CommandContext(ctx, r.bin("fieldpass-broker"), args...)
	cmd.Env = r.env("FIELDPASS_DATABASE_URL=" + r.pgURL)
	var stderr strings.Builder
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return "", fmt.Errorf("fieldpass-broker %s: %v\n%s", args[0], err, stderr.String())
	}
	return string(out), nil
}

func (r *run) startDevice(ctx context.Context, name, site string) (string, error) {
	dir := filepath.Join(r.cfg.Dir, "devices", name)
	stateDir := filepath.Join(dir, "state")
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return "", err
	}
	var notes []string

	// The device's web UI, served by this process: it is the device's
	// own server, reached only through its connector.
	ui := routerui.New(routerUser, routerPassword, false)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	uiCtx, cancel := context.WithCancel(context.Background())
	srv := &http.Server{Handler: ui, ReadHeaderTimeout: 10 * time.Second}
	srv.RegisterOnShutdown(cancel)
	go ui.Tick(uiCtx, time.Second)
	go func() {
		srv.Serve(ln)
		cancel()
	}()
	r.mu.Lock()
	r.servers = append(r.servers, srv)
	r.mu.Unlock()
	services := []string{"--service", "web=" + ln.Addr().String()}
	notes = append(notes, "web")

	if r.sshKey != "" {
		addr, err := r.startSSHD(ctx, name, dir)
		if err != nil {
			return "", err
		}
		services = append(services, "--service", "ssh="+addr)
		notes = append(notes, "ssh")
	}

	if !fileExists(filepath.Join(stateDir, "state.json")) {
		token, err := r.brokerCmd(ctx, "token", "create", "--device", name, "--label", "site="+site, "--label", "demo=yes", "--ttl", "10m")
		if err != nil {
			return "", err
		}
		cmd := exec.CommandContext(ctx, r.bin("fieldpass-connector"), "enroll", "--broker", r.brokerURL, "--token", strings.TrimSpace(token), "--state-dir", stateDir)
		cmd.Env = r.env()
		if out, err := cmd.CombinedOutput(); err != nil {
			return "", fmt.Errorf("enrol: %v\n%s", err, out)
		}
		notes = append(notes, "enrolled")
	}
	p, err := startProc("connector "+name, filepath.Join(r.logs, "connector-"+name+".log"), r.env(), nil, syscall.SIGTERM, r.bin("fieldpass-connector"),
		append([]string{"run", "--state-dir", stateDir, "--listen", "127.0.0.1:0", "--max-backoff", "5s"}, services...)...)
	if err != nil {
		return "", err
	}
	r.add(p)
	return strings.Join(notes, ", "), nil
}

func (r *run) waitOnline(ctx context.Context) (string, error) {
	var last string
	err := waitFor(nil, 60*time.Second, "all online", func() bool {
		out, err := r.brokerCmd(ctx, "device", "list", "--json")
		if err != nil {
			last = err.Error()
			return false
		}
		var devs []fieldpass.Device
		if json.Unmarshal([]byte(out), &devs) != nil {
			return false
		}
		online := 0
		for _, d := range devs {
			for _, want := range demoDevices() {
				if d.Name == want.name && d.Presence.Online {
					online++
				}
			}
		}
		last = fmt.Sprintf("%d of %d online", online, len(demoDevices()))
		return online == len(demoDevices())
	})
	if err != nil {
		return "", fmt.Errorf("%w (%s); see %s", err, last, r.logs)
	}
	return fmt.Sprintf("%d devices", len(demoDevices())), nil
}

// grants makes sure the engineer holds a grant on every demo device and
// the vendor an expiring one on router-south, through the API as an
// automation account, and describes them.
func (r *run) grants(ctx context.Context) (string, error) {
	token, err := r.brokerCmd(ctx, "user", "token", "--email", "demo-setup@example.com", "--role", "admin", "--ttl", "10m")
	if err != nil {
		return "", err
	}
	c := httpapi.NewClient(r.brokerURL, strings.TrimSpace(token))
	want := []struct {
		who string
		g   httpapi.GrantCreate
	}{
		{"engineer", httpapi.GrantCreate{Subject: "engineer@example.com", Selector: map[string]string{"demo": "yes"},
			Services: []string{"ssh", "web"}, Duration: engineerGrant.String(), Reason: "demo: the engineer looks after every demo device"}},
		{"vendor", httpapi.GrantCreate{Subject: "vendor@acme.example", Devices: []string{demoDevices()[1].name},
			Services: []string{"ssh", "web"}, Duration: vendorGrant.String(), Reason: "demo: a vendor's visit, which expires"}},
	}
	var lines []string
	for _, w := range want {
		have, err := c.Grants(ctx, httpapi.GrantQuery{Subject: w.g.Subject, Active: true})
		if err != nil {
			return "", fmt.Errorf("list grants: %w", err)
		}
		var g *fieldpass.Grant
		if len(have) > 0 {
			g = have[0]
		} else if g, err = c.CreateGrant(ctx, w.g); err != nil {
			return "", fmt.Errorf("grant for the %s: %w", w.who, err)
		}
		on := strings.Join(g.Devices, ", ")
		if on == "" {
			on = "devices labelled demo=yes"
		}
		lines = append(lines, fmt.Sprintf("%-9s %s on %s until %s", w.who, strings.Join(g.Services, " and "), on, g.End.Local().Format("Mon 2 Jan 15:04")))
	}
	return strings.Join(lines, "\n"), nil
}

func (r *run) printInstructions(grants string) {
	w := r.out
	fmt.Fprintf(w, "\nPortal: %s   (log in through the development provider's form)\n\n", r.portalURL)
	for _, p := range demoPeople() {
		fmt.Fprintf(w, "  %-9s %-22s password %s\n", p.role, p.email, r.st.Passwords[p.email])
	}
	fmt.Fprintf(w, "\nGrants:\n")
	for _, l := range strings.Split(grants, "\n") {
		fmt.Fprintf(w, "  %s\n", l)
	}
	devs := demoDevices()
	fmt.Fprintf(w, "\nDevices: %s and %s. Their own web UI login (FieldRouter 3000): %s / %s\n", devs[0].name, devs[1].name, routerUser, routerPassword)
	if r.sshKey != "" {
		fmt.Fprintf(w, "SSH on the devices: user %s, key %s (upload it in the portal's terminal)\n", r.sshUser, r.sshKey)
	} else {
		fmt.Fprintf(w, "SSH: %s\n", r.sshMissing)
	}
	fmt.Fprintf(w, "\nTry the CLI, in another terminal:\n\n")
	fmt.Fprintf(w, "  export PATH=%s:\"$PATH\" FIELDPASS_BROKER=%s\n", shellQuote(r.cfg.Bin), r.portalURL)
	fmt.Fprintf(w, "  fieldpass login --broker %s     # approve in the browser, as engineer@example.com\n", r.portalURL)
	fmt.Fprintf(w, "  fieldpass devices\n")
	if r.sshKey != "" {
		fmt.Fprintf(w, "  fieldpass ssh %s@%s -- -i %s\n", r.sshUser, devs[0].name, shellQuote(r.sshKey))
	}
	fmt.Fprintf(w, "  fieldpass forward %s web 127.0.0.1:8480   # then open http://127.0.0.1:8480\n", devs[0].name)
	fmt.Fprintf(w, "  fieldpass sessions\n")
	fmt.Fprintf(w, "\nAdmin commands: FIELDPASS_DATABASE_URL=%s fieldpass-broker device list\n", r.pgURL)
	fmt.Fprintf(w, "Logs: %s\n\nPress Ctrl-C to stop everything.\n", r.logs)
}

func shellQuote(s string) string {
	if s != "" && strings.IndexFunc(s, func(c rune) bool {
		return !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || strings.ContainsRune("/._-+=:@", c))
	}) < 0 {
		return s
	}
	return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'"
}

// freePort returns a port of 127.0.0.1 that was free a moment ago.
func freePort(network string) (int, error) {
	if network == "udp" {
		c, err := net.ListenPacket("udp", "127.0.0.1:0")
		if err != nil {
			return 0, err
		}
		defer c.Close()
		return c.LocalAddr().(*net.UDPAddr).Port, nil
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port, nil
}

// lockDir takes the demo directory for this run: two demos on one
// directory would share a Postgres data directory.
func lockDir(dir string) (unlock func(), err error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	f, err := os.OpenFile(filepath.Join(dir, "lock"), os.O_CREATE|os.O_RDWR, 0o600)
	if err != nil {
		return nil, err
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		f.Close()
		return nil, fmt.Errorf("another demo is running in %s: stop it first (Ctrl-C)", dir)
	}
	return func() { f.Close() }, nil
}

// Reset removes the demo directory, refusing while a demo runs on it.
func Reset(dir string) error {
	if !fileExists(dir) {
		return nil
	}
	unlock, err := lockDir(dir)
	if err != nil {
		return err
	}
	defer unlock()
	if err := stopStalePostmaster(filepath.Join(dir, "postgres", "data"), 30*time.Second); err != nil {
		return err
	}
	return os.RemoveAll(dir)
}
