//go:build linux

package e2e_test

import (
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"sync"
	"testing"
)

// TestDeployFiles checks deploy/ without Docker, systemd or a cluster:
// what can be parsed is parsed, what can be verified offline is verified,
// and every flag the files pass to a binary is one its -h lists.
func TestDeployFiles(t *testing.T) {
	t.Parallel()
	deploy := filepath.Join(bins.moduleRoot, "deploy")
	flags := newFlagIndex()

	t.Run("systemd", func(t *testing.T) {
		for _, tc := range []struct {
			file    string
			command string // binary and subcommand in ExecStart
		}{
			{"fieldpass-broker.service", "fieldpass-broker serve"},
			{"fieldpass-connector.service", "fieldpass-connector run"},
		} {
			t.Run(tc.file, func(t *testing.T) {
				path := filepath.Join(deploy, "systemd", tc.file)
				u := parseUnit(t, path)
				s := u["Service"]
				want := map[string]string{
					"DynamicUser":             "yes",
					"NoNewPrivileges":         "yes",
					"ProtectSystem":           "strict",
					"PrivateTmp":              "yes",
					"RestrictAddressFamilies": "AF_INET AF_INET6 AF_UNIX AF_NETLINK",
					"CapabilityBoundingSet":   "",
					"Restart":                 "always",
				}
				for k, v := range want {
					if got, ok := s[k]; !ok || got[len(got)-1] != v {
						t.Errorf("[Service] %s = %q, want %q", k, got, v)
					}
				}
				for _, k := range []string{"StateDirectory", "RestartSec", "ExecStart"} {
					if len(s[k]) == 0 || s[k][0] == "" {
						t.Errorf("[Service] %s is missing", k)
					}
				}
				if exec := strings.Join(s["ExecStart"], " "); !strings.Contains(exec, tc.command) {
					t.Errorf("ExecStart=%s does not run %s", exec, tc.command)
				}
				switch tc.file {
				case "fieldpass-broker.service":
					if len(s["EnvironmentFile"]) == 0 {
						t.Error("the broker unit takes FIELDPASS_DATABASE_URL from no EnvironmentFile")
					}
				case "fieldpass-connector.service":
					// A connector must never stop restarting.
					if v := u["Unit"]["StartLimitIntervalSec"]; len(v) == 0 || v[0] != "0" {
						t.Errorf("[Unit] StartLimitIntervalSec = %q, want 0 (no start limit)", v)
					}
				}
				checkInvocations(t, flags, path, readFile(t, path), 1)
				verifyUnit(t, path)
			})
		}
	})

	// deploy/kubernetes is kustomize: base/ and overlays/. Its own module
	// renders every overlay and validates each object against the
	// Kubernetes and CloudNativePG schemas (make test runs it); here, what
	// needs the binaries: the flags and config files the manifests give
	// the broker are ones it takes.
	t.Run("kubernetes", func(t *testing.T) {
		dir := filepath.Join(deploy, "kubernetes")
		var files, confs, kustomizations []string
		err := filepath.WalkDir(dir, func(path string, d os.DirEntry, err error) error {
			switch {
			case err != nil:
				return err
			case d.IsDir() && d.Name() == "testdata":
				return filepath.SkipDir
			case strings.HasSuffix(path, ".yaml"):
				files = append(files, path)
			case d.Name() == "broker.conf":
				confs = append(confs, path)
			}
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
		kinds := map[string]any{} // kind -> the last of it
		for _, path := range files {
			name, _ := filepath.Rel(dir, path)
			docs, err := parseYAML(readFile(t, path))
			if err != nil {
				t.Fatalf("%s: %v", name, err)
			}
			for _, d := range docs {
				kind := yamlString(d, "kind")
				if yamlString(d, "apiVersion") == "" || kind == "" {
					t.Errorf("%s: a document without apiVersion and kind", name)
				}
				if kind != "Kustomization" && yamlString(d, "metadata", "name") == "" {
					t.Errorf("%s: %s without metadata.name", name, kind)
				}
				kinds[kind] = d
				switch kind {
				case "Kustomization":
					kustomizations = append(kustomizations, filepath.Dir(path))
					// Everything it lists exists.
					var refs []any
					refs = append(refs, yamlList(d, "resources")...)
					for _, p := range yamlList(d, "patches") {
						refs = append(refs, yamlGet(p, "path"))
					}
					for _, g := range yamlList(d, "configMapGenerator") {
						refs = append(refs, yamlList(g, "files")...)
					}
					for _, r := range refs {
						if r, _ := r.(string); r == "" {
							t.Errorf("%s: an empty reference", name)
						} else if _, err := os.Stat(filepath.Join(filepath.Dir(path), r)); err != nil {
							t.Errorf("%s: %v", name, err)
						}
					}
				case "StatefulSet", "Job":
					// The image's entrypoint is the broker, so args start
					// with its subcommand.
					for _, c := range yamlList(d, "spec", "template", "spec", "containers") {
						if len(yamlList(c, "args")) == 0 {
							continue // a patch of resources, say
						}
						args := []string{"fieldpass-broker"}
						for _, a := range yamlList(c, "args") {
							args = append(args, a.(string))
						}
						checkInvocations(t, flags, name+" "+kind+" args", strings.Join(args, " "), 1)
					}
				}
			}
			checkInvocations(t, flags, name, readFile(t, path), 0) // the usage in its comments
		}
		if kinds["StatefulSet"] == nil || kinds["Job"] == nil || len(kustomizations) < 2 || len(confs) < 2 {
			t.Fatalf("found kinds %v, kustomizations %v, broker.conf %v: want the broker's StatefulSet, the migrate Job, a base and overlays each with a broker.conf",
				keys(kinds), kustomizations, confs)
		}

		// Every broker.conf is read by serve --config: with no database
		// configured, serve stops at something else than the file. (The
		// overlays' name the OIDC secret's path in the pod, absent here.)
		serveFlags := flags.of(t, "fieldpass-broker", "serve")
		for _, conf := range confs {
			name, _ := filepath.Rel(dir, conf)
			for n, line := range strings.Split(readFile(t, conf), "\n") {
				line = strings.TrimSpace(line)
				if line == "" || strings.HasPrefix(line, "#") {
					continue
				}
				if k, _, _ := strings.Cut(line, "="); !serveFlags[strings.TrimSpace(k)] {
					t.Errorf("%s:%d: %q is not a flag of fieldpass-broker serve", name, n+1, strings.TrimSpace(k))
				}
			}
			r := runCmd(t, env(), bins.broker, "serve", "--config", conf)
			if r.code == 0 || strings.Contains(r.stderr, conf) {
				t.Errorf("%v\nwant serve to read %s and stop at the missing database or secret file", r, name)
			}
		}
		bad := filepath.Join(t.TempDir(), "broker.conf")
		if err := os.WriteFile(bad, []byte(readFile(t, confs[0])+"\nno-such-setting = 1\n"), 0o644); err != nil {
			t.Fatal(err)
		}
		if r := runCmd(t, env(), bins.broker, "serve", "--config", bad); r.code == 0 || !strings.Contains(r.stderr, bad) || !strings.Contains(r.stderr, "no-such-setting") {
			t.Errorf("%v\nwant the bad setting refused with its file and name", r)
		}

		// Where kubectl is installed, its kustomize renders each directory
		// as a cluster would read it; it needs no cluster for that.
		if kubectl, err := exec.LookPath("kubectl"); err == nil {
			for _, k := range kustomizations {
				cmd := exec.Command(kubectl, "kustomize", k)
				cmd.Env = env("KUBECONFIG=" + os.DevNull)
				if out, err := cmd.CombinedOutput(); err != nil {
					t.Errorf("kubectl kustomize %s: %v\n%s", k, err, out)
				}
			}
		} else {
			t.Log("kubectl not installed: kustomize rendering not checked here (deploy/kubernetes's own test does)")
		}
	})

	t.Run("containers", func(t *testing.T) {
		for _, tc := range []struct{ file, binary string }{
			{"Dockerfile.broker", "fieldpass-broker"},
			{"Dockerfile.connector", "fieldpass-connector"},
		} {
			t.Run(tc.file, func(t *testing.T) {
				path := filepath.Join(deploy, "container", tc.file)
				src := readFile(t, path)
				var from []string
				var user, entrypoint, cmd string
				for _, l := range dockerInstructions(src) {
					word, rest, _ := strings.Cut(l, " ")
					switch strings.ToUpper(word) {
					case "FROM":
						from = append(from, rest)
					case "USER":
						user = rest
					case "ENTRYPOINT":
						entrypoint = rest
					case "CMD":
						cmd = rest
					}
				}
				if len(from) < 2 {
					t.Errorf("FROM %v: want a build stage and a runtime stage", from)
				} else if last := from[len(from)-1]; !strings.Contains(last, "distroless/static") && last != "scratch" {
					t.Errorf("runtime stage FROM %s: want distroless static or scratch", last)
				}
				if !strings.Contains(src, "CGO_ENABLED=0") {
					t.Error("the build does not set CGO_ENABLED=0 (a static binary)")
				}
				if uid, _, _ := strings.Cut(user, ":"); user == "" || uid == "0" || uid == "root" {
					t.Errorf("USER %q: want a non-root user", user)
				}
				var ep, args []string
				if err := json.Unmarshal([]byte(entrypoint), &ep); err != nil || len(ep) != 1 || filepath.Base(ep[0]) != tc.binary {
					t.Errorf("ENTRYPOINT %s: want the exec form running %s", entrypoint, tc.binary)
				}
				if err := json.Unmarshal([]byte(cmd), &args); err != nil {
					t.Errorf("CMD %s: want the exec form: %v", cmd, err)
				}
				checkInvocations(t, flags, tc.file+" ENTRYPOINT+CMD", strings.Join(append(ep, args...), " "), 1)
				checkInvocations(t, flags, path, src, 1) // the usage in its comments
				if _, err := os.Stat(path + ".dockerignore"); err != nil {
					t.Errorf("no %s.dockerignore: the whole work tree would be sent as build context", tc.file)
				}
			})
		}
	})

	t.Run("connector.conf", func(t *testing.T) {
		path := filepath.Join(deploy, "examples", "connector.conf")
		runFlags := flags.of(t, "fieldpass-connector", "run")
		services := 0
		for n, line := range strings.Split(readFile(t, path), "\n") {
			line = strings.TrimSpace(line)
			if line == "" || strings.HasPrefix(line, "#") {
				continue
			}
			k, _, ok := strings.Cut(line, "=")
			if k = strings.TrimSpace(k); !ok || !runFlags[k] {
				t.Errorf("%s:%d: %q is not a flag of fieldpass-connector run", path, n+1, k)
			}
			if k == "service" {
				services++
			}
		}
		if services < 2 {
			t.Errorf("the example sets %d services; show the repeated service line", services)
		}

		// The connector's own parser accepts the file: with a state dir that
		// does not exist, the error is about enrolment, not the config.
		missing := filepath.Join(t.TempDir(), "not-enrolled")
		r := runCmd(t, env(), bins.connector, "run", "--config", path, "--state-dir", missing)
		if r.code == 0 || !strings.Contains(r.stderr, "not enrolled") || !strings.Contains(r.stderr, missing) || strings.Contains(r.stderr, path) {
			t.Errorf("%v\nwant the connector to read the config and then stop at the missing enrolment", r)
		}
		// ...and it really reads it: a bad line in a copy is refused.
		bad := filepath.Join(t.TempDir(), "bad.conf")
		if err := os.WriteFile(bad, []byte(readFile(t, path)+"\nno-such-setting = 1\n"), 0o644); err != nil {
			t.Fatal(err)
		}
		r = runCmd(t, env(), bins.connector, "run", "--config", bad, "--state-dir", missing)
		if r.code == 0 || !strings.Contains(r.stderr, bad) || !strings.Contains(r.stderr, "no-such-setting") {
			t.Errorf("%v\nwant the bad setting refused with its file and name", r)
		}
	})

	t.Run("broker.env", func(t *testing.T) {
		src := readFile(t, filepath.Join(deploy, "examples", "broker.env"))
		for _, v := range []string{"FIELDPASS_MIGRATE_DATABASE_URL", "FIELDPASS_DATABASE_URL", "FIELDPASS_PUBLIC_URL"} {
			if !regexp.MustCompile(`(?m)^` + v + `=\S+`).MatchString(src) {
				t.Errorf("broker.env does not set %s", v)
			}
		}
		unit := readFile(t, filepath.Join(deploy, "systemd", "fieldpass-broker.service"))
		if !strings.Contains(unit, "${FIELDPASS_PUBLIC_URL}") {
			t.Error("the broker unit does not use FIELDPASS_PUBLIC_URL from broker.env")
		}
	})

}

func readFile(t *testing.T, path string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func keys(m map[string]any) []string {
	var ks []string
	for k := range m {
		ks = append(ks, k)
	}
	sort.Strings(ks)
	return ks
}

// unit is a systemd unit file: section -> key -> values in order.
type unit map[string]map[string][]string

func parseUnit(t *testing.T, path string) unit {
	t.Helper()
	u := unit{}
	var section string
	var pending string // a line continued with a backslash
	for n, line := range strings.Split(readFile(t, path), "\n") {
		line = strings.TrimSpace(line)
		if pending == "" && (line == "" || strings.HasPrefix(line, "#") || strings.HasPrefix(line, ";")) {
			continue
		}
		if strings.HasSuffix(line, `\`) {
			pending += strings.TrimSuffix(line, `\`) + " "
			continue
		}
		line, pending = pending+line, ""
		if strings.HasPrefix(line, "[") && strings.HasSuffix(line, "]") {
			section = line[1 : len(line)-1]
			if u[section] == nil {
				u[section] = map[string][]string{}
			}
			continue
		}
		k, v, ok := strings.Cut(line, "=")
		if !ok || section == "" {
			t.Fatalf("%s:%d: want [Section] or Key=value, got %q", path, n+1, line)
		}
		k, v = strings.TrimSpace(k), strings.TrimSpace(v)
		u[section][k] = append(u[section][k], v)
	}
	return u
}

// verifyUnit runs systemd-analyze verify on a copy of the unit whose
// binaries are the ones built for this test run, and reads the hardening
// score systemd-analyze security gives it offline.
func verifyUnit(t *testing.T, path string) {
	t.Helper()
	sa, err := exec.LookPath("systemd-analyze")
	if err != nil {
		t.Log("systemd-analyze not installed: unit not verified")
		return
	}
	src := strings.ReplaceAll(readFile(t, path), "/usr/local/bin/", filepath.Dir(bins.broker)+"/")
	cp := filepath.Join(t.TempDir(), filepath.Base(path))
	if err := os.WriteFile(cp, []byte(src), 0o644); err != nil {
		t.Fatal(err)
	}
	// verify exits 0 on unknown keys and bad values, but says so.
	out, err := exec.Command(sa, "verify", cp).CombinedOutput()
	if err != nil || len(out) > 0 {
		t.Errorf("systemd-analyze verify: %v\n%s", err, out)
	}
	out, err = exec.Command(sa, "security", "--offline=true", "--no-pager", cp).CombinedOutput()
	m := regexp.MustCompile(`Overall exposure level for \S+: ([0-9.]+)`).FindSubmatch(out)
	if err != nil || m == nil {
		t.Logf("systemd-analyze security --offline not available here: %v", err)
		return
	}
	score, _ := strconv.ParseFloat(string(m[1]), 64)
	t.Logf("systemd-analyze security: exposure %.1f (0 is best, 10 worst)", score)
	if score > 1.5 {
		t.Errorf("exposure %.1f: the unit lost hardening (want at most 1.5)", score)
	}
}

// dockerInstructions joins a Dockerfile's continued lines and drops its
// comments.
func dockerInstructions(src string) []string {
	var out []string
	var cur string
	for _, line := range strings.Split(src, "\n") {
		line = strings.TrimSpace(line)
		if strings.HasPrefix(line, "#") || (line == "" && cur == "") {
			continue
		}
		if strings.HasSuffix(line, `\`) {
			cur += strings.TrimSuffix(line, `\`) + " "
			continue
		}
		if l := strings.TrimSpace(cur + line); l != "" {
			out = append(out, l)
		}
		cur = ""
	}
	return out
}

// flagIndex knows the flags of each binary's subcommands, as -h lists them.
type flagIndex struct {
	mu   sync.Mutex
	subs map[string][]string // binary -> subcommands
	seen map[string]map[string]bool
}

func newFlagIndex() *flagIndex {
	return &flagIndex{seen: map[string]map[string]bool{}, subs: map[string][]string{
		"fieldpass-broker":    {"serve", "migrate", "token create", "device list", "device ls", "device disable", "device enable", "device decommission", "version"},
		"fieldpass-connector": {"enroll", "enrol", "run", "version"},
	}}
}

var helpFlagRE = regexp.MustCompile(`(?m)^  -([a-z0-9][a-z0-9-]*)`)

// of returns the flags of binary's subcommand sub.
func (f *flagIndex) of(t *testing.T, binary, sub string) map[string]bool {
	t.Helper()
	f.mu.Lock()
	defer f.mu.Unlock()
	key := binary + " " + sub
	if m, ok := f.seen[key]; ok {
		return m
	}
	m := map[string]bool{}
	if sub != "version" {
		path := map[string]string{"fieldpass-broker": bins.broker, "fieldpass-connector": bins.connector}[binary]
		r := runCmd(t, env(), path, append(strings.Fields(sub), "-h")...)
		for _, sm := range helpFlagRE.FindAllStringSubmatch(r.stdout+r.stderr, -1) {
			m[sm[1]] = true
		}
		if len(m) == 0 {
			t.Fatalf("%s -h lists no flags:\n%v", key, r)
		}
	}
	f.seen[key] = m
	return m
}

// checkInvocations finds every command line in text that runs
// fieldpass-broker or fieldpass-connector (the program name as a word, with
// or without a directory) and checks its subcommand and --flags against
// the binary's -h. Continued lines are joined (also inside # comments); a
// word that is not a subcommand (an image name in `docker run --name
// fieldpass-broker`) is not an invocation. It wants at least min of them.
func checkInvocations(t *testing.T, f *flagIndex, where, text string, min int) {
	t.Helper()
	found := 0
	lines := strings.Split(text, "\n")
	for i := 0; i < len(lines); i++ {
		n, line := i, lines[i]
		for strings.HasSuffix(strings.TrimRight(line, " \t"), `\`) && i+1 < len(lines) {
			i++
			next := strings.TrimPrefix(strings.TrimLeft(lines[i], " \t"), "#")
			line = strings.TrimSuffix(strings.TrimRight(line, " \t"), `\`) + " " + next
		}
		words := strings.Fields(line)
		for j, w := range words {
			binary := strings.Trim(w, `"'[],`)
			binary = binary[strings.LastIndex(binary, "/")+1:]
			if f.subs[binary] == nil {
				continue
			}
			rest := words[j+1:]
			sub := ""
			for _, s := range f.subs[binary] {
				sw := strings.Fields(s)
				if len(rest) >= len(sw) && strings.Join(cleanWords(rest[:len(sw)]), " ") == s && len(sw) > len(strings.Fields(sub)) {
					sub = s
				}
			}
			if sub == "" {
				continue
			}
			found++
			known := f.of(t, binary, sub)
			for _, a := range cleanWords(rest[len(strings.Fields(sub)):]) {
				if a == "#" || a == "|" || a == "&&" || a == ";" || a == ">" || a == ")" || strings.HasPrefix(a, ">") || strings.HasPrefix(a, "2>") {
					break
				}
				if !strings.HasPrefix(a, "-") || a == "-" {
					continue
				}
				name := strings.TrimLeft(a, "-")
				name, _, _ = strings.Cut(name, "=")
				if !known[name] {
					t.Errorf("%s:%d: %s %s has no flag %q (see %s %s -h)", where, n+1, binary, sub, a, binary, sub)
				}
			}
		}
	}
	if found < min {
		t.Errorf("%s: found %d invocations of fieldpass-broker or fieldpass-connector, want at least %d", where, found, min)
	}
}

func cleanWords(ws []string) []string {
	out := make([]string, len(ws))
	for i, w := range ws {
		out[i] = strings.Trim(w, `"'[],`)
	}
	return out
}
