//go:build linux

package e2e_test

import (
	"net/url"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
)

// TestDeployCompose checks deploy/compose without a container engine: the
// file parses; the broker and the migrate step run the image built by make
// images, with flags their -h lists; the broker starts after the migration
// succeeded and Postgres is healthy, and has a healthcheck that needs no
// shell; passwords come from secret files, never from the environment;
// WireGuard is published on UDP and the HTTP port on loopback only; both
// broker containers run unprivileged.
func TestDeployCompose(t *testing.T) {
	t.Parallel()
	dir := filepath.Join(bins.moduleRoot, "deploy", "compose")
	path := filepath.Join(dir, "compose.yaml")
	src := readFile(t, path)
	docs, err := parseYAML(src)
	if err != nil || len(docs) != 1 {
		t.Fatalf("compose.yaml: %v (%d documents)", err, len(docs))
	}
	c := docs[0]
	services, _ := yamlGet(c, "services").(map[string]any)
	pg, migrate, broker := services["postgres"], services["migrate"], services["broker"]
	if pg == nil || migrate == nil || broker == nil {
		t.Fatalf("services %v: want postgres, migrate and broker", keys(services))
	}
	flags := newFlagIndex()
	flags.subs["fieldpass-broker"] = append(flags.subs["fieldpass-broker"], "health")

	// The image's entrypoint is the broker: its command starts with the
	// subcommand.
	command := func(svc any) string {
		var words []string
		for _, w := range yamlList(svc, "command") {
			words = append(words, w.(string))
		}
		return "fieldpass-broker " + strings.Join(words, " ")
	}
	checkInvocations(t, flags, "compose.yaml migrate command", command(migrate), 1)
	checkInvocations(t, flags, "compose.yaml broker command", command(broker), 1)
	checkInvocations(t, flags, "compose.yaml", src, 1) // the usage in its comments
	if !strings.HasPrefix(command(migrate), "fieldpass-broker migrate ") || !strings.HasPrefix(command(broker), "fieldpass-broker serve ") {
		t.Errorf("migrate runs %q, broker %q", command(migrate), command(broker))
	}
	for _, want := range []string{"--require-separate-role", "--public-url=${FIELDPASS_PUBLIC_URL:?", "--key-file=/var/lib/fieldpass-broker/", "--broker-id="} {
		if !strings.Contains(command(broker), want) {
			t.Errorf("the broker's command lacks %s", want)
		}
	}
	if yamlString(migrate, "image") != yamlString(broker, "image") || !strings.Contains(yamlString(broker, "image"), "fieldpass-broker") {
		t.Errorf("images: migrate %q, broker %q: want the broker's image for both", yamlString(migrate, "image"), yamlString(broker, "image"))
	}

	// Order: Postgres healthy, then the migration done, then the broker.
	if yamlString(migrate, "depends_on", "postgres", "condition") != "service_healthy" ||
		yamlString(broker, "depends_on", "postgres", "condition") != "service_healthy" ||
		yamlString(broker, "depends_on", "migrate", "condition") != "service_completed_successfully" {
		t.Error("want migrate after a healthy postgres, and the broker after a successful migrate")
	}
	if yamlString(migrate, "restart") != "no" {
		t.Errorf("migrate restart %q: a one-shot step must not restart", yamlString(migrate, "restart"))
	}
	if test := yamlList(pg, "healthcheck", "test"); len(test) < 2 || test[0] != "CMD" || test[1] != "pg_isready" {
		t.Errorf("postgres healthcheck %v: want pg_isready", test)
	}
	// The image has no shell: the healthcheck is the exec form of the
	// broker's own health command.
	test := yamlList(broker, "healthcheck", "test")
	if len(test) < 3 || test[0] != "CMD" || !strings.HasSuffix(test[1].(string), "/fieldpass-broker") || test[2] != "health" {
		t.Errorf("broker healthcheck %v: want [CMD, .../fieldpass-broker, health, ...]", test)
	} else {
		var words []string
		for _, w := range test[1:] {
			words = append(words, w.(string))
		}
		checkInvocations(t, flags, "compose.yaml broker healthcheck", strings.Join(words, " "), 1)
	}

	// Secrets: each is a file, passwords reach the broker only through
	// pgpass files named in the database URLs.
	declared := map[string]bool{}
	for name := range yamlGet(c, "secrets").(map[string]any) {
		if yamlString(c, "secrets", name, "file") == "" {
			t.Errorf("secret %s is not a file", name)
		}
		declared[name] = true
	}
	for name, svc := range map[string]any{"postgres": pg, "migrate": migrate, "broker": broker} {
		var has []string
		for _, s := range yamlList(svc, "secrets") {
			if !declared[s.(string)] {
				t.Errorf("%s uses secret %s, which is not declared", name, s)
			}
			has = append(has, s.(string))
		}
		for k, v := range yamlGet(svc, "environment").(map[string]any) {
			v := v.(string)
			if strings.Contains(k, "PASSWORD") && !strings.HasSuffix(k, "_FILE") {
				t.Errorf("%s: %s in the environment: want a secret file", name, k)
			}
			if !strings.HasPrefix(v, "postgres://") {
				continue
			}
			u, err := url.Parse(v)
			if err != nil {
				t.Errorf("%s: %s: %v", name, k, err)
				continue
			}
			if _, set := u.User.Password(); set {
				t.Errorf("%s: %s holds a password", name, k)
			}
			secret, ok := strings.CutPrefix(u.Query().Get("passfile"), "/run/secrets/")
			if !ok || !slices.Contains(has, secret) {
				t.Errorf("%s: %s reads its password from %q, not a secret of the service (%v)", name, k, u.Query().Get("passfile"), has)
			}
		}
	}
	if u := yamlString(migrate, "environment", "FIELDPASS_MIGRATE_DATABASE_URL"); !strings.Contains(u, "fieldpass_owner@") {
		t.Errorf("migrate connects as %q, want the schema owner", u)
	}
	if u := yamlString(broker, "environment", "FIELDPASS_DATABASE_URL"); !strings.Contains(u, "fieldpass_broker@") {
		t.Errorf("the broker connects as %q, want its own role", u)
	}
	if yamlGet(broker, "environment", "FIELDPASS_MIGRATE_DATABASE_URL") != nil || slices.Contains(yamlList(broker, "secrets"), any("owner_pgpass")) {
		t.Error("the broker can reach the schema owner's credentials")
	}

	// The Postgres init script makes both roles from the same secrets.
	script := filepath.Join(dir, "initdb", "10-fieldpass-roles.sh")
	body := readFile(t, script)
	if out, err := exec.Command("sh", "-n", script).CombinedOutput(); err != nil {
		t.Errorf("sh -n %s: %v\n%s", script, err, out)
	}
	for _, want := range []string{"owner_pgpass", "broker_pgpass", "CREATE ROLE fieldpass_owner", "CREATE ROLE fieldpass_broker", "OWNER fieldpass_owner"} {
		if !strings.Contains(body, want) {
			t.Errorf("the init script lacks %q", want)
		}
	}
	if !slices.Contains(yamlList(pg, "volumes"), any("./initdb:/docker-entrypoint-initdb.d:ro")) {
		t.Errorf("postgres volumes %v: the init script is not mounted", yamlList(pg, "volumes"))
	}

	// Ports: WireGuard to the world over UDP, HTTP on loopback for a TLS
	// proxy (plain HTTP never leaves the host).
	var ports []string
	for _, p := range yamlList(broker, "ports") {
		ports = append(ports, p.(string))
	}
	if !slices.Contains(ports, "51820:51820/udp") || !slices.Contains(ports, "127.0.0.1:8080:8080/tcp") || len(ports) != 2 {
		t.Errorf("broker ports %v: want 51820:51820/udp and 127.0.0.1:8080:8080/tcp", ports)
	}
	if !regexp.MustCompile(`--wg-listen=:51820\b`).MatchString(command(broker)) || !strings.Contains(command(broker), "--http-listen=:8080") {
		t.Errorf("the broker does not listen where the ports go: %s", command(broker))
	}

	for name, svc := range map[string]any{"migrate": migrate, "broker": broker} {
		if u := yamlString(svc, "user"); u == "" || strings.HasPrefix(u, "0") || strings.HasPrefix(u, "root") {
			t.Errorf("%s user %q: want a non-root uid", name, u)
		}
		if yamlString(svc, "read_only") != "true" || !slices.Contains(yamlList(svc, "cap_drop"), any("ALL")) ||
			!slices.Contains(yamlList(svc, "security_opt"), any("no-new-privileges:true")) {
			t.Errorf("%s: want read_only, cap_drop ALL and no-new-privileges", name)
		}
	}
	if yamlString(broker, "volumes", 0) != "broker-state:/var/lib/fieldpass-broker" || yamlGet(c, "volumes", "broker-state") == nil {
		t.Errorf("the broker's key is not on a named volume: %v", yamlList(broker, "volumes"))
	}
}
