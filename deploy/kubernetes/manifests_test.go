// Package kubernetes_test renders the Kubernetes manifests with kustomize,
// as kubectl apply -k does, and checks every object against the schemas
// of its kind (testdata/schemas, see schemas_test.go), the Cluster also
// against its CRD's CEL rules (cel_test.go), and against the
// rules the broker needs: non-root and read-only pods, the Services on the
// ports the broker listens on and tells devices, the NetworkPolicy, and
// secrets only by reference, matching the roles of the Postgres Cluster.
package kubernetes_test

import (
	"fmt"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/yannh/kubeconform/pkg/resource"
	"github.com/yannh/kubeconform/pkg/validator"
	"sigs.k8s.io/kustomize/api/krusty"
	"sigs.k8s.io/kustomize/kyaml/filesys"
	"sigs.k8s.io/yaml"
)

func TestManifests(t *testing.T) {
	v := newValidator(t)
	// Every overlay an operator may apply (a site's own included), and
	// the base they start from.
	overlays, err := filepath.Glob("overlays/*/kustomization.yaml")
	if err != nil || len(overlays) < 2 {
		t.Fatalf("overlays: %v %v", overlays, err)
	}
	builds := []string{"base"}
	for _, k := range overlays {
		builds = append(builds, filepath.Dir(k))
	}
	for _, dir := range builds {
		t.Run(dir, func(t *testing.T) {
			objs := render(t, dir)
			validate(t, v, objs)
			if n := checkCRDRules(t, objs); n == 0 {
				t.Error("no rule of the Cluster CRD ran")
			} else {
				t.Logf("%d objects valid; %d CEL rules of the Cluster CRD held", len(objs), n)
			}
			checkRules(t, objs)
		})
	}
	// The example Secrets are not in any build; they are still manifests.
	t.Run("secrets.example.yaml", func(t *testing.T) {
		var objs []object
		for _, doc := range strings.Split(string(readFileT(t, "secrets.example.yaml")), "\n---\n") {
			objs = append(objs, parseObject(t, []byte(doc)))
		}
		if len(objs) < 4 {
			t.Errorf("%d Secrets, want the broker's key, database password, OIDC client secret and TLS", len(objs))
		}
		validate(t, v, objs)
	})
}

// TestManifestsRejectBroken breaks a copy of the manifests in one way each
// and wants the schema check or a rule to say so.
func TestManifestsRejectBroken(t *testing.T) {
	v := newValidator(t)
	for _, tc := range []struct {
		name, file, old, new string
		schema               bool   // the schema rejects it; else a rule
		want                 string // in the error
		overlay              string // rendered; production if ""
	}{
		{"misspelt field", "base/broker-statefulset.yaml",
			"readOnlyRootFilesystem: true", "readOnlyRootFileSystem: true", true, "'readOnlyRootFileSystem' not allowed", ""},
		{"wrong type", "base/broker-services.yaml",
			"port: 443", "port: https-port", true, "/spec/ports/0/port': got string, want integer", ""},
		{"missing required field", "base/migrate-job.yaml",
			"        - name: migrate\n", "        - \n", true, "missing property 'name'", ""},
		{"CRD field misspelt", "base/postgres-cluster.yaml",
			"passwordSecret:", "passwordSecrets:", true, "'passwordSecrets' not allowed", ""},
		{"CRD enum", "base/postgres-cluster.yaml",
			"ensure: present", "ensure: yes-please", true, "/spec/managed/roles/0/ensure': value must be one of 'present', 'absent'", ""},
		{"CRD rule (CEL)", "overlays/production/postgres-ha.yaml",
			"number: 1", "number: 0", true, "The number of synchronous replicas should be greater than zero", ""},
		{"writable root filesystem", "base/broker-statefulset.yaml",
			"readOnlyRootFilesystem: true", "readOnlyRootFilesystem: false", false, "readOnlyRootFilesystem=\"false\"", ""},
		{"UDP Service to the HTTPS port", "base/broker-services.yaml",
			"targetPort: wireguard", "targetPort: https", false, "51820/UDP goes to container port \"https\"", ""},
		{"WireGuard endpoint not the Service's port", "overlays/production/broker.conf",
			"wg-endpoint = wg.fieldpass.example.com:51820", "wg-endpoint = wg.fieldpass.example.com:51821", false, "on 51821/UDP", ""},
		{"password in the URL", "base/broker-statefulset.yaml",
			"postgres://fieldpass_broker@", "postgres://fieldpass_broker:hunter2@", false, "has a password in it", ""},
		{"broker role not the Cluster's", "base/postgres-cluster.yaml",
			"- name: fieldpass_broker", "- name: fieldpass_brokers", false, "want the broker's role \"fieldpass_brokers\"", ""},
		{"NetworkPolicy lets in more", "base/networkpolicies.yaml",
			"          port: wireguard\n", "          port: wireguard\n        - protocol: TCP\n          port: 22\n", false, "ingress [TCP/22 TCP/https UDP/wireguard]", ""},
		{"port name too long", "base/broker-statefulset.yaml",
			"- name: wireguard\n", "- name: wireguard-tunnel\n", false, "\"wireguard-tunnel\" is not a valid port name", ""},
		{"Secret nobody is told to create", "base/broker-statefulset.yaml",
			"secretName: fieldpass-broker-key", "secretName: fieldpass-broker-wgkey", false, "Secret fieldpass-broker-wgkey is referenced", ""},
		{"Service name not a DNS label", "base/broker-services.yaml",
			"name: fieldpass-broker-0-wireguard", "name: 0-wireguard", false, "DNS label", ""},
		{"broker in the first apply", "base/broker-services.yaml",
			"    app.kubernetes.io/component: broker\n", "    app.kubernetes.io/component: migrate\n", false, "component in (database,migrate) selects", ""},
		{"key readable by all", "base/broker-statefulset.yaml",
			"            secretName: fieldpass-broker-key\n            defaultMode: 0440", "            secretName: fieldpass-broker-key\n            defaultMode: 0444", false, "Secret fieldpass-broker-key is mounted with defaultMode \"292\"", ""},
		{"no PodDisruptionBudget selector match", "base/broker-pdb.yaml",
			"      app.kubernetes.io/name: fieldpass-broker\n", "      app.kubernetes.io/name: fieldpass-brokers\n", false, "PodDisruptionBudget selects", ""},
		{"two brokers down at once", "base/broker-pdb.yaml",
			"maxUnavailable: 1", "maxUnavailable: 2", false, "PodDisruptionBudget maxUnavailable \"2\"", "fleet"},
		{"second broker in the first apply", "overlays/fleet/wireguard-services.yaml",
			"    app.kubernetes.io/component: broker\n", "    app.kubernetes.io/component: database\n", false, "component in (database,migrate) selects", "fleet"},
		// Several brokers.
		{"three brokers without the link", "overlays/fleet/broker-link-args.json",
			"\"--peer-listen=:8444\"", "\"--lease-ttl=15s\"", false, "StatefulSet replicas 3 without --peer-listen", "fleet"},
		{"peer port open to all", "overlays/fleet/networkpolicy-peer.yaml",
			"  ingress:\n    - from:\n        - podSelector:\n            matchLabels:\n              app.kubernetes.io/name: fieldpass-broker\n      ports:",
			"  ingress:\n    - ports:", false, "lets in the link between brokers (TCP peer) from []", "fleet"},
		{"peer port open to another namespace", "overlays/fleet/networkpolicy-peer.yaml",
			"    - from:\n        - podSelector:", "    - from:\n        - namespaceSelector: {}\n          podSelector:", false, "want broker pods only", "fleet"},
		{"two endpoints for three brokers", "overlays/fleet/broker.conf",
			"wg-endpoint = wg-2.fieldpass.example.com:51820\n", "", false, "2 wg-endpoint for 3 brokers", "fleet"},
		{"endpoint Service of the wrong pod", "overlays/fleet/wireguard-services.yaml",
			"pod-name: fieldpass-broker-2", "pod-name: fieldpass-broker-1", false, "selecting fieldpass-broker-2 alone", "fleet"},
		{"endpoint Service in front of every broker", "overlays/fleet/wireguard-services.yaml",
			"    statefulset.kubernetes.io/pod-name: fieldpass-broker-2\n", "", false, "sends WireGuard to brokers [0 1 2]", "fleet"},
		{"peer address not the pod's name", "overlays/fleet/broker-link-args.json",
			"--peer-addr=$(POD_NAME).fieldpass-broker-pods.", "--peer-addr=$(POD_NAME).fieldpass-broker.", false, "want $(POD_NAME).fieldpass-broker-pods.$(POD_NAMESPACE).svc:8444", "fleet"},
		{"peer key not from the Secret", "overlays/fleet/broker-link-args.json",
			"--peer-key=/etc/fieldpass/peer/tls.key", "--peer-key=/etc/fieldpass/tls/tls.key", false, "--peer-key=/etc/fieldpass/tls/tls.key comes from", "fleet"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			root := copyTree(t)
			path := filepath.Join(root, tc.file)
			src := string(readFileT(t, path))
			if !strings.Contains(src, tc.old) {
				t.Fatalf("%s no longer contains %q: update the test", tc.file, tc.old)
			}
			if err := os.WriteFile(path, []byte(strings.Replace(src, tc.old, tc.new, 1)), 0o644); err != nil {
				t.Fatal(err)
			}
			schema, rules := &recorder{TB: t}, &recorder{TB: t}
			overlay := "production"
			if tc.overlay != "" {
				overlay = tc.overlay
			}
			objs := render(t, filepath.Join(root, "overlays", overlay))
			validate(schema, v, objs)
			checkCRDRules(schema, objs)
			checkRules(rules, objs)
			rec, by := rules, "a rule"
			if tc.schema {
				rec, by = schema, "the schema"
			}
			all := strings.Join(rec.errs, "\n")
			if !strings.Contains(all, tc.want) {
				t.Errorf("want %s to reject it with %q; got:\n%s", by, tc.want, all)
			}
		})
	}
}

// recorder collects errors instead of failing, so that a test can want them.
type recorder struct {
	testing.TB
	errs []string
}

func (r *recorder) Errorf(format string, args ...any) {
	r.errs = append(r.errs, fmt.Sprintf(format, args...))
}
func (r *recorder) Error(args ...any) { r.errs = append(r.errs, fmt.Sprint(args...)) }

// copyTree copies the manifests (base, overlays, testdata not) to a
// temporary directory.
func copyTree(t *testing.T) string {
	t.Helper()
	root := t.TempDir()
	for _, top := range []string{"base", "overlays"} {
		err := filepath.WalkDir(top, func(path string, d os.DirEntry, err error) error {
			if err != nil {
				return err
			}
			dst := filepath.Join(root, path)
			if d.IsDir() {
				return os.MkdirAll(dst, 0o755)
			}
			b, err := os.ReadFile(path)
			if err != nil {
				return err
			}
			return os.WriteFile(dst, b, 0o644)
		})
		if err != nil {
			t.Fatal(err)
		}
	}
	return root
}

// object is one rendered Kubernetes object.
type object struct {
	m    map[string]any
	yaml []byte
}

func (o object) kind() string { return str(o.m, "kind") }
func (o object) name() string { return str(o.m, "metadata", "name") }
func (o object) String() string {
	return o.kind() + "/" + o.name()
}

// render builds a kustomization as kubectl apply -k would.
func render(t *testing.T, dir string) []object {
	t.Helper()
	k := krusty.MakeKustomizer(krusty.MakeDefaultOptions())
	m, err := k.Run(filesys.MakeFsOnDisk(), dir)
	if err != nil {
		t.Fatalf("kustomize build %s: %v", dir, err)
	}
	var objs []object
	for _, r := range m.Resources() {
		b, err := r.AsYAML()
		if err != nil {
			t.Fatal(err)
		}
		objs = append(objs, parseObject(t, b))
	}
	return objs
}

func parseObject(t testing.TB, b []byte) object {
	t.Helper()
	var m map[string]any
	if err := yaml.Unmarshal(b, &m); err != nil {
		t.Fatal(err)
	}
	return object{m: m, yaml: b}
}

func newValidator(t *testing.T) validator.Validator {
	t.Helper()
	dir, err := filepath.Abs(schemaDir)
	if err != nil {
		t.Fatal(err)
	}
	v, err := validator.New([]string{dir + "/{{ .ResourceKind }}{{ .KindSuffix }}.json"}, validator.Opts{
		Strict:            true,
		KubernetesVersion: strings.TrimPrefix(kubernetesVersion, "v"),
	})
	if err != nil {
		t.Fatal(err)
	}
	return v
}

// validate checks each object against its kind's schema. A kind without a
// schema fails: add it to schemaKinds.
func validate(t testing.TB, v validator.Validator, objs []object) {
	t.Helper()
	for _, o := range objs {
		r := v.ValidateResource(resource.Resource{Path: o.String(), Bytes: o.yaml})
		if r.Status == validator.Valid {
			continue
		}
		// kubeconform flattens the error tree into r.Err's text: one
		// "- at 'path': what" per node, the leaves saying what is wrong.
		msg := fmt.Sprint(r.Err)
		if _, tree, ok := strings.Cut(msg, "jsonschema validation failed with "); ok {
			msg = strings.ReplaceAll(tree, " - at ", "\n\t- at ")
		}
		t.Errorf("%s does not fit its schema (%s): %s", o, map[validator.Status]string{validator.Error: "error", validator.Invalid: "invalid",
			validator.Skipped: "skipped", validator.Empty: "empty"}[r.Status], msg)
	}
}

// checkRules checks what the schemas cannot: that the objects fit together
// and keep the broker's rules.
func checkRules(t testing.TB, objs []object) {
	t.Helper()
	byKind := map[string][]object{}
	for _, o := range objs {
		byKind[o.kind()] = append(byKind[o.kind()], o)
	}
	one := func(kind, name string) map[string]any {
		for _, o := range byKind[kind] {
			if name == "" || o.name() == name {
				return o.m
			}
		}
		t.Fatalf("no %s %s among %v", kind, name, objs)
		return nil
	}
	sts := one("StatefulSet", "fieldpass-broker")
	job := one("Job", "fieldpass-migrate")
	cluster := one("Cluster", "")
	clusterName := str(cluster, "metadata", "name")

	pod := get(sts, "spec", "template", "spec")
	broker := container(t, pod, "broker")
	migrate := container(t, get(job, "spec", "template", "spec"), "migrate")
	checkPodSecurity(t, "StatefulSet", pod, broker)
	checkPodSecurity(t, "Job", get(job, "spec", "template", "spec"), migrate)

	// Each pod of the StatefulSet, by ordinal: its labels, and whether a
	// Service selects it alone.
	replicas := 1
	if n, ok := get(sts, "spec", "replicas").(float64); ok {
		replicas = int(n)
	}
	podLabels, _ := get(sts, "spec", "template", "metadata", "labels").(map[string]any)
	ordinalLabels := make([]map[string]any, replicas)
	for i := range ordinalLabels {
		ordinalLabels[i] = map[string]any{"statefulset.kubernetes.io/pod-name": fmt.Sprintf("%s-%d", str(sts, "metadata", "name"), i)}
		for k, v := range podLabels {
			ordinalLabels[i][k] = v
		}
	}
	// selects wants sel to select broker pods; it returns the ordinals
	// selected.
	selects := func(what string, sel any) []int {
		t.Helper()
		m, _ := sel.(map[string]any)
		if len(m) == 0 {
			t.Errorf("%s selects nothing or everything", what)
			return nil
		}
		var which []int
		for i, labels := range ordinalLabels {
			if func() bool {
				for k, v := range m {
					if labels[k] != v {
						return false
					}
				}
				return true
			}() {
				which = append(which, i)
			}
		}
		if len(which) == 0 {
			t.Errorf("%s selects %v, which no broker pod carries (%v)", what, m, ordinalLabels)
		}
		return which
	}
	selects("StatefulSet", get(sts, "spec", "selector", "matchLabels"))
	selects("PodDisruptionBudget", get(one("PodDisruptionBudget", "fieldpass-broker"), "spec", "selector", "matchLabels"))

	args := flags(t, broker)
	ports := map[string]string{} // container port name -> number/protocol
	for _, p := range list(broker, "ports") {
		ports[str(p, "name")] = str(p, "containerPort") + "/" + str(p, "protocol")
	}
	if want := port(t, "--http-listen", args["http-listen"]) + "/TCP"; ports["https"] != want {
		t.Errorf("container port https is %q, serve listens on %s", ports["https"], want)
	}
	if want := port(t, "--wg-listen", args["wg-listen"]) + "/UDP"; ports["wireguard"] != want {
		t.Errorf("container port wireguard is %q, serve listens on %s", ports["wireguard"], want)
	}

	// The site's flags: the ConfigMap mounted where --config points.
	conf := brokerConf(t, objs, pod, broker, args["config"])
	publicURL := ""
	if v := conf["public-url"]; len(v) > 0 {
		publicURL = v[len(v)-1]
	}
	publicPort := "443"
	if u, err := url.Parse(publicURL); err != nil || u.Scheme != "https" || u.Host == "" {
		t.Errorf("broker.conf public-url %q: want https://host[:port]", publicURL)
	} else if u.Port() != "" {
		publicPort = u.Port()
	}
	// The endpoints devices are told: one per broker, in ordinal order.
	endpoints := conf["wg-endpoint"]
	if len(endpoints) == 0 {
		// The default: the public URL's host, the --wg-listen port.
		endpoints = []string{"default:" + port(t, "--wg-listen", args["wg-listen"])}
	}
	if len(endpoints) != replicas {
		t.Errorf("broker.conf has %d wg-endpoint for %d brokers: want one per broker, so that a device whose broker stops has another to go to", len(endpoints), replicas)
	}
	for i, ep := range endpoints {
		if slices.Contains(endpoints[:i], ep) {
			t.Errorf("broker.conf wg-endpoint %s twice", ep)
		}
	}

	// Services: HTTPS on TCP at the public URL's port, in front of every
	// broker; WireGuard on a UDP load balancer per broker, selecting its
	// pod alone, at the port of its endpoint; each to the right container
	// port.
	var httpsOK bool
	wgOK := make([]bool, replicas)
	for _, svc := range byKind["Service"] {
		name := svc.name()
		spec := get(svc.m, "spec")
		pods := selects("Service "+name, get(spec, "selector"))
		for _, p := range list(spec, "ports") {
			target, proto := str(p, "targetPort"), str(p, "protocol")
			if ports[target] == "" || !strings.HasSuffix(ports[target], "/"+proto) {
				t.Errorf("Service %s port %s/%s goes to container port %q (%s)", name, str(p, "port"), proto, target, ports[target])
				continue
			}
			public := str(spec, "type") == "LoadBalancer"
			switch {
			case public && target == "https" && str(p, "port") == publicPort:
				httpsOK = len(pods) == replicas
			case target == "wireguard" && len(pods) != 1:
				t.Errorf("Service %s sends WireGuard to brokers %v: want one Service per broker pod, its endpoint", name, pods)
			case public && target == "wireguard" && str(p, "port") == port(t, "wg-endpoint", endpoints[min(pods[0], len(endpoints)-1)]):
				wgOK[pods[0]] = str(spec, "externalTrafficPolicy") == "Local"
			}
		}
	}
	if !httpsOK {
		t.Errorf("no LoadBalancer Service publishes every broker's https port on %s/TCP, the public URL's port", publicPort)
	}
	for i, ok := range wgOK {
		if !ok {
			ep := endpoints[min(i, len(endpoints)-1)]
			t.Errorf("no LoadBalancer Service (externalTrafficPolicy: Local) selecting %s alone publishes its wireguard port on %s/UDP, the port of its endpoint %s (wg-endpoint)",
				ordinalLabels[i]["statefulset.kubernetes.io/pod-name"], port(t, "wg-endpoint", ep), ep)
		}
	}

	// Probes: live on /healthz, ready on /readyz, over TLS when serve has it.
	scheme := "HTTP"
	if args["tls-cert"] != "" {
		scheme = "HTTPS"
	}
	for probe, want := range map[string]string{"startupProbe": "/healthz", "livenessProbe": "/healthz", "readinessProbe": "/readyz"} {
		if got := str(broker, probe, "httpGet", "path"); got != want {
			t.Errorf("%s path %q, want %s", probe, got, want)
		}
		if p := str(broker, probe, "httpGet", "port"); p != "https" || str(broker, probe, "httpGet", "scheme") != scheme {
			t.Errorf("%s on port %q scheme %q, want https and %s", probe, p, str(broker, probe, "httpGet", "scheme"), scheme)
		}
	}

	checkNetworkPolicy(t, one("NetworkPolicy", "fieldpass-broker"), podLabels, clusterName,
		[]string{"TCP/https", "UDP/wireguard"}, true)
	jobLabels, _ := get(job, "spec", "template", "metadata", "labels").(map[string]any)
	checkNetworkPolicy(t, one("NetworkPolicy", "fieldpass-migrate"), jobLabels, clusterName, nil, false)

	// At most one broker down at a time by a drain, never all of them.
	if pdb := one("PodDisruptionBudget", "fieldpass-broker"); str(pdb, "spec", "maxUnavailable") != "1" {
		t.Errorf("PodDisruptionBudget maxUnavailable %q, want 1: a drain stops one broker at a time, and never blocks on a single one", str(pdb, "spec", "maxUnavailable"))
	}
	checkFleet(t, byKind, sts, get(sts, "spec", "template"), broker, args, conf, replicas, selects)

	// Databases: each connects as its role of the Cluster, its password
	// from the Secret the operator also uses, verifying the server's CA.
	owner := str(cluster, "spec", "bootstrap", "initdb", "owner")
	database := str(cluster, "spec", "bootstrap", "initdb", "database")
	var brokerRole, brokerSecret string
	for _, r := range list(cluster, "spec", "managed", "roles") {
		if str(r, "login") == "true" && str(r, "superuser") != "true" {
			brokerRole, brokerSecret = str(r, "name"), str(r, "passwordSecret", "name")
		}
	}
	if brokerRole == "" || brokerSecret == "" || brokerRole == owner {
		t.Errorf("Cluster %s: want a managed login role for the broker, not the owner %q, with a passwordSecret", clusterName, owner)
	}
	if str(cluster, "spec", "enableSuperuserAccess") != "false" {
		t.Errorf("Cluster %s: enableSuperuserAccess is not false", clusterName)
	}
	checkDatabase(t, "StatefulSet", pod, broker, "FIELDPASS_DATABASE_URL", brokerRole, brokerSecret, clusterName, database)
	checkDatabase(t, "Job", get(job, "spec", "template", "spec"), migrate, "FIELDPASS_MIGRATE_DATABASE_URL", owner, clusterName+"-app", clusterName, database)
	if got := flags(t, migrate)["grant-to"]; got != brokerRole {
		t.Errorf("migrate --grant-to=%q, want the broker's role %q", got, brokerRole)
	}
	if !slices.Contains(list(broker, "args"), any("--require-separate-role")) {
		t.Error("the broker runs without --require-separate-role")
	}

	// The StatefulSet's governing Service exists, headless, and selects
	// its pods.
	headless := one("Service", str(sts, "spec", "serviceName"))
	if str(headless, "spec", "clusterIP") != "None" {
		t.Errorf("Service %s, the StatefulSet's serviceName, is not headless", str(sts, "spec", "serviceName"))
	}
	// The NetworkPolicy's named ports are the container's, same protocol.
	for _, r := range list(one("NetworkPolicy", "fieldpass-broker"), "spec", "ingress") {
		for _, p := range list(r, "ports") {
			if name := str(p, "port"); !strings.HasSuffix(ports[name], "/"+str(p, "protocol")) {
				t.Errorf("NetworkPolicy fieldpass-broker lets in %s/%s, which is no such container port (%s)", str(p, "protocol"), name, ports[name])
			}
		}
	}

	// deploy/README.md applies Postgres and the migrations first, by
	// label: that selects them and nothing of the broker's.
	var first []string
	for _, o := range objs {
		if c := str(o.m, "metadata", "labels", "app.kubernetes.io/component"); c == "database" || c == "migrate" {
			first = append(first, o.String())
		}
	}
	slices.Sort(first)
	if want := []string{"Cluster/" + clusterName, "Job/fieldpass-migrate", "NetworkPolicy/fieldpass-migrate"}; !slices.Equal(first, want) {
		t.Errorf("app.kubernetes.io/component in (database,migrate) selects %v, want %v (deploy/README.md applies them first)", first, want)
	}

	// What the API server checks beyond the schemas, for the names used.
	for _, o := range objs {
		checkName(t, o.String(), o.name(), o.kind() == "Service")
		for k, v := range get(o.m, "metadata", "labels").(map[string]any) {
			if s := fmt.Sprint(v); len(s) > 63 || !labelValue.MatchString(s) {
				t.Errorf("%s: label %s=%q is not a valid label value", o, k, s)
			}
		}
	}
	for _, c := range []any{broker, migrate} {
		for _, p := range list(c, "ports") {
			checkPortName(t, "container port", str(p, "name"))
		}
		vols := map[string]bool{}
		for _, v := range list(get(sts, "spec", "template", "spec"), "volumes") {
			vols[str(v, "name")] = true
		}
		for _, v := range list(get(job, "spec", "template", "spec"), "volumes") {
			vols[str(v, "name")] = true
		}
		for _, m := range list(c, "volumeMounts") {
			if !vols[str(m, "name")] {
				t.Errorf("container %s mounts volume %q, which its pod lacks", str(c, "name"), str(m, "name"))
			}
		}
	}
	for _, svc := range byKind["Service"] {
		for _, p := range list(svc.m, "spec", "ports") {
			checkPortName(t, svc.String()+" port", str(p, "name"))
		}
	}

	// The broker's secrets are not readable by other users (its group, by
	// fsGroup, reads them). The operator's CA is public.
	for _, v := range list(get(sts, "spec", "template", "spec"), "volumes") {
		name := str(v, "secret", "secretName")
		if name == "" || name == clusterName+"-ca" {
			continue
		}
		if mode, err := strconv.Atoi(str(v, "secret", "defaultMode")); err != nil || mode&0o007 != 0 {
			t.Errorf("Secret %s is mounted with defaultMode %q: want no access for others (0440)", name, str(v, "secret", "defaultMode"))
		}
	}

	// Every Secret referenced is made by the operator for this Cluster or
	// documented in secrets.example.yaml, so that an operator who follows
	// it has them all.
	documented := map[string]bool{clusterName + "-app": true, clusterName + "-ca": true}
	for _, doc := range strings.Split(string(readFileT(t, "secrets.example.yaml")), "\n---\n") {
		o := parseObject(t, []byte(doc))
		documented[o.name()] = true
		// The operator takes the role's password only from a basic-auth
		// Secret whose username is the role.
		if o.name() == brokerSecret && (str(o.m, "type") != "kubernetes.io/basic-auth" || str(o.m, "stringData", "username") != brokerRole) {
			t.Errorf("secrets.example.yaml: Secret %s is not basic-auth with username %s", brokerSecret, brokerRole)
		}
	}
	var referenced []string
	for _, pod := range []any{get(sts, "spec", "template", "spec"), get(job, "spec", "template", "spec")} {
		for _, v := range list(pod, "volumes") {
			if n := str(v, "secret", "secretName"); n != "" {
				referenced = append(referenced, n)
			}
		}
		for _, c := range list(pod, "containers") {
			for _, e := range list(c, "env") {
				if n := str(e, "valueFrom", "secretKeyRef", "name"); n != "" {
					referenced = append(referenced, n)
				}
			}
		}
	}
	referenced = append(referenced, brokerSecret)
	for _, n := range referenced {
		if !documented[n] {
			t.Errorf("Secret %s is referenced but neither made by the operator nor in secrets.example.yaml", n)
		}
	}
}

// checkFleet wants several brokers to be a fleet (docs/DESIGN.md, "Several
// brokers"): linked over mutual TLS on a port only broker pods reach, each
// reached at its own name under the headless Service, which the link's
// certificate, one Secret for all, names.
func checkFleet(t testing.TB, byKind map[string][]object, sts, tmpl, broker any, args map[string]string, conf map[string][]string, replicas int, selects func(string, any) []int) {
	t.Helper()
	if args["peer-listen"] == "" {
		if replicas != 1 {
			t.Errorf("StatefulSet replicas %d without --peer-listen: brokers that do not share their devices through the database fight over the tunnels", replicas)
		}
		for _, np := range byKind["NetworkPolicy"] {
			if np.name() == "fieldpass-broker-peer" {
				t.Errorf("NetworkPolicy %s opens the link between brokers, which do not listen for it (no --peer-listen)", np.name())
			}
		}
		return
	}
	peerPort := port(t, "--peer-listen", args["peer-listen"])
	var peerName string
	for _, p := range list(broker, "ports") {
		if str(p, "containerPort") == peerPort && str(p, "protocol") == "TCP" {
			peerName = str(p, "name")
		}
	}
	if peerName == "" {
		t.Errorf("no container port is %s/TCP, where --peer-listen listens", peerPort)
	}
	env := map[string]string{}
	for _, e := range list(broker, "env") {
		env[str(e, "name")] = str(e, "valueFrom", "fieldRef", "fieldPath")
	}
	if env["POD_NAME"] != "metadata.name" || env["POD_NAMESPACE"] != "metadata.namespace" || args["broker-id"] != "$(POD_NAME)" {
		t.Errorf("want POD_NAME and POD_NAMESPACE from the pod's metadata, and --broker-id=$(POD_NAME); have %v, --broker-id=%q", env, args["broker-id"])
	}
	// The others dial the pod's own name under the governing Service.
	host := "$(POD_NAME)." + str(sts, "spec", "serviceName") + ".$(POD_NAMESPACE).svc"
	if a := args["peer-addr"]; a != host+":"+peerPort && a != host+".cluster.local:"+peerPort {
		t.Errorf("--peer-addr=%q, want %s:%s: the pod's name under the headless Service, at --peer-listen's port", a, host, peerPort)
	}
	// In this order, so that a file from another Secret is named as the
	// odd one out against the certificate's Secret (a map's order would
	// name the certificate or the CA instead, at random).
	var secret string
	for _, f := range [][2]string{{"peer-cert", "tls.crt"}, {"peer-key", "tls.key"}, {"peer-ca", "ca.crt"}} {
		flag, key := f[0], f[1]
		src := mountedSecret(get(tmpl, "spec"), broker, args[flag])
		name, got, _ := strings.Cut(src, "/")
		if got != key || secret != "" && name != secret {
			t.Errorf("--%s=%s comes from %q, want key %s of the link's Secret (tls.crt, tls.key, ca.crt of one Secret)", flag, args[flag], src, key)
		}
		if secret == "" {
			secret = name
		}
	}
	if v := conf["lease-ttl"]; len(v) > 0 {
		if d, err := time.ParseDuration(v[len(v)-1]); err != nil || d < 3*time.Second || d > 5*time.Minute {
			t.Errorf("broker.conf lease-ttl %q: want 3s to 5m", v[len(v)-1])
		}
	}

	// The link's port: in from broker pods only, and out to them, by some
	// policy; no policy lets anything else in on it.
	var in, out bool
	for _, np := range byKind["NetworkPolicy"] {
		name := "NetworkPolicy " + np.name()
		podLabels, _ := get(tmpl, "metadata", "labels").(map[string]any)
		sel, _ := get(np.m, "spec", "podSelector", "matchLabels").(map[string]any)
		applies := true
		for k, v := range sel {
			applies = applies && podLabels[k] == v
		}
		if !applies {
			continue
		}
		for dir, rules := range map[string][]any{"from": list(np.m, "spec", "ingress"), "to": list(np.m, "spec", "egress")} {
			for _, r := range rules {
				onPeer := len(list(r, "ports")) == 0
				for _, p := range list(r, "ports") {
					if pp := str(p, "port"); (pp == peerName || pp == peerPort) && str(p, "protocol") == "TCP" {
						onPeer = true
					}
				}
				if !onPeer {
					continue
				}
				peers := list(r, dir)
				brokersOnly := len(peers) > 0
				for _, p := range peers {
					if get(p, "namespaceSelector") != nil || get(p, "ipBlock") != nil || len(selects(name+" "+dir, get(p, "podSelector", "matchLabels"))) != replicas {
						brokersOnly = false
					}
				}
				switch {
				case dir == "from" && !brokersOnly:
					t.Errorf("%s lets in the link between brokers (TCP %s) from %v: want broker pods only", name, peerName, peers)
				case dir == "from" && brokersOnly:
					in = true
				case dir == "to" && brokersOnly:
					out = true
				}
			}
		}
	}
	if !in || !out {
		t.Errorf("no NetworkPolicy lets the brokers reach each other's link (TCP %s): in %v, out %v", peerName, in, out)
	}
}

var (
	dns1123Subdomain = regexp.MustCompile(`^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$`)
	dns1035Label     = regexp.MustCompile(`^[a-z]([-a-z0-9]*[a-z0-9])?$`)
	labelValue       = regexp.MustCompile(`^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$`)
	portName         = regexp.MustCompile(`^[a-z0-9]([a-z0-9-]*[a-z0-9])?$`)
)

// checkName applies the API server's rules for object names: a DNS
// subdomain, and for a Service a DNS label starting with a letter.
func checkName(t testing.TB, what, name string, service bool) {
	t.Helper()
	if len(name) > 253 || !dns1123Subdomain.MatchString(name) {
		t.Errorf("%s: name %q is not a DNS subdomain", what, name)
	}
	if service && (len(name) > 63 || !dns1035Label.MatchString(name)) {
		t.Errorf("%s: a Service's name must be a DNS label starting with a letter (at most 63)", what)
	}
}

// checkPortName applies IANA_SVC_NAME: at most 15 lowercase letters,
// digits and inner single hyphens, at least one letter.
func checkPortName(t testing.TB, what, name string) {
	t.Helper()
	if len(name) > 15 || !portName.MatchString(name) || strings.Contains(name, "--") || strings.Trim(name, "0123456789-") == "" {
		t.Errorf("%s %q is not a valid port name (IANA_SVC_NAME: at most 15 lowercase letters, digits, hyphens)", what, name)
	}
}

func checkPodSecurity(t testing.TB, what string, pod, c any) {
	t.Helper()
	if str(pod, "securityContext", "runAsNonRoot") != "true" || str(c, "securityContext", "runAsNonRoot") != "true" {
		t.Errorf("%s: runAsNonRoot is not true on the pod and the container", what)
	}
	if str(pod, "securityContext", "seccompProfile", "type") != "RuntimeDefault" {
		t.Errorf("%s: the pod's seccompProfile is not RuntimeDefault", what)
	}
	if str(pod, "automountServiceAccountToken") != "false" {
		t.Errorf("%s: the pod mounts a service account token it has no use for", what)
	}
	sc := func(k string) string { return str(c, "securityContext", k) }
	if sc("readOnlyRootFilesystem") != "true" || sc("allowPrivilegeEscalation") != "false" {
		t.Errorf("%s: readOnlyRootFilesystem=%q allowPrivilegeEscalation=%q, want true and false",
			what, sc("readOnlyRootFilesystem"), sc("allowPrivilegeEscalation"))
	}
	if drop := list(c, "securityContext", "capabilities", "drop"); len(drop) != 1 || drop[0] != "ALL" {
		t.Errorf("%s: capabilities drop %v, want [ALL]", what, drop)
	}
	if add := list(c, "securityContext", "capabilities", "add"); len(add) > 0 {
		t.Errorf("%s: adds capabilities %v", what, add)
	}
	if str(c, "resources", "requests", "cpu") == "" || str(c, "resources", "requests", "memory") == "" || str(c, "resources", "limits", "memory") == "" {
		t.Errorf("%s: want cpu and memory requests and a memory limit", what)
	}
}

// checkNetworkPolicy wants the policy to select the pods, deny what it does
// not list both ways, let in exactly ingress (protocol/port), and let out
// Postgres, DNS and, if https, TCP 443.
func checkNetworkPolicy(t testing.TB, np map[string]any, podLabels map[string]any, cluster string, ingress []string, https bool) {
	t.Helper()
	name := "NetworkPolicy " + str(np, "metadata", "name")
	sel, _ := get(np, "spec", "podSelector", "matchLabels").(map[string]any)
	if len(sel) == 0 {
		t.Errorf("%s selects every pod", name)
	}
	for k, v := range sel {
		if podLabels[k] != v {
			t.Errorf("%s selects %s=%v, not the pods (%v)", name, k, v, podLabels)
		}
	}
	types := list(np, "spec", "policyTypes")
	if !slices.Contains(types, any("Ingress")) || !slices.Contains(types, any("Egress")) {
		t.Errorf("%s policyTypes %v, want Ingress and Egress", name, types)
	}
	var in []string
	for _, r := range list(np, "spec", "ingress") {
		if len(list(r, "ports")) == 0 {
			t.Errorf("%s: an ingress rule without ports lets in every port", name)
		}
		for _, p := range list(r, "ports") {
			in = append(in, str(p, "protocol")+"/"+str(p, "port"))
		}
	}
	slices.Sort(in)
	if !slices.Equal(in, ingress) {
		t.Errorf("%s: ingress %v, want only %v", name, in, ingress)
	}
	var out []string
	for _, r := range list(np, "spec", "egress") {
		to := "anywhere"
		if peers := list(r, "to"); len(peers) > 0 {
			to = ""
			for _, p := range peers {
				if c := str(p, "podSelector", "matchLabels", "cnpg.io/cluster"); c != "" {
					to += "postgres:" + c
				} else if str(p, "podSelector", "matchLabels", "k8s-app") == "kube-dns" {
					to += "dns"
				} else {
					to += fmt.Sprint(p)
				}
			}
		}
		if len(list(r, "ports")) == 0 {
			t.Errorf("%s: an egress rule without ports lets out every port", name)
		}
		for _, p := range list(r, "ports") {
			out = append(out, to+" "+str(p, "protocol")+"/"+str(p, "port"))
		}
	}
	slices.Sort(out)
	want := []string{"dns TCP/53", "dns UDP/53", "postgres:" + cluster + " TCP/5432"}
	if https {
		want = append([]string{"anywhere TCP/443"}, want...)
	}
	if !slices.Equal(out, want) {
		t.Errorf("%s: egress %v, want only %v", name, out, want)
	}
}

// checkDatabase wants variable to be a URL for role on the Cluster's
// primary with no password in it, PGPASSWORD from secret, and the server
// verified against the Cluster's CA, mounted.
func checkDatabase(t testing.TB, what string, pod, c any, variable, role, secret, cluster, database string) {
	t.Helper()
	env := map[string]any{}
	for _, e := range list(c, "env") {
		env[str(e, "name")] = e
	}
	raw := str(env[variable], "value")
	u, err := url.Parse(raw)
	if err != nil || raw == "" {
		t.Errorf("%s: %s %q is not a URL: %v", what, variable, raw, err)
		return
	}
	if _, has := u.User.Password(); has {
		t.Errorf("%s: %s has a password in it: take it from a Secret (PGPASSWORD)", what, variable)
	}
	if u.User.Username() != role || u.Hostname() != cluster+"-rw" || strings.TrimPrefix(u.Path, "/") != database {
		t.Errorf("%s: %s is %s@%s%s, want the Cluster's %s@%s-rw/%s", what, variable, u.User.Username(), u.Hostname(), u.Path, role, cluster, database)
	}
	if q := u.Query(); q.Get("sslmode") != "verify-full" || q.Get("sslrootcert") == "" {
		t.Errorf("%s: %s does not verify the server (sslmode=verify-full, sslrootcert)", what, variable)
	} else if src := mountedSecret(pod, c, q.Get("sslrootcert")); src != cluster+"-ca/ca.crt" {
		t.Errorf("%s: sslrootcert %s comes from %q, want the Cluster's CA (%s-ca, ca.crt)", what, q.Get("sslrootcert"), src, cluster)
	}
	pw := env["PGPASSWORD"]
	if str(pw, "valueFrom", "secretKeyRef", "name") != secret || str(pw, "valueFrom", "secretKeyRef", "key") != "password" {
		t.Errorf("%s: PGPASSWORD is not the password of Secret %s", what, secret)
	}
	// No other variable carries a secret in clear.
	for name, e := range env {
		if v := str(e, "value"); strings.Contains(strings.ToLower(name), "password") && v != "" {
			t.Errorf("%s: %s has a value in the manifest", what, name)
		}
	}
}

// mountedSecret says which Secret and key the file at path comes from
// ("secret/key"), or "".
func mountedSecret(pod, c any, path string) string {
	for _, m := range list(c, "volumeMounts") {
		dir := str(m, "mountPath")
		rel, ok := strings.CutPrefix(path, dir+"/")
		if !ok {
			continue
		}
		for _, v := range list(pod, "volumes") {
			if str(v, "name") != str(m, "name") || str(v, "secret", "secretName") == "" {
				continue
			}
			key := rel
			for _, it := range list(v, "secret", "items") {
				if str(it, "path") == rel {
					key = str(it, "key")
				}
			}
			return str(v, "secret", "secretName") + "/" + key
		}
	}
	return ""
}

// brokerConf finds the ConfigMap file that --config names, through the
// pod's volume, and parses it as serve does: name = value lines, each
// name's values in order (repeatable flags).
func brokerConf(t testing.TB, objs []object, pod, c any, path string) map[string][]string {
	t.Helper()
	dir, file := filepath.Split(path)
	var cm string
	for _, m := range list(c, "volumeMounts") {
		if str(m, "mountPath")+"/" == dir {
			for _, v := range list(pod, "volumes") {
				if str(v, "name") == str(m, "name") {
					cm = str(v, "configMap", "name")
				}
			}
		}
	}
	for _, o := range objs {
		if o.kind() != "ConfigMap" || o.name() != cm {
			continue
		}
		conf := map[string][]string{}
		for _, line := range strings.Split(str(o.m, "data", file), "\n") {
			line = strings.TrimSpace(line)
			if line == "" || strings.HasPrefix(line, "#") {
				continue
			}
			k, v, ok := strings.Cut(line, "=")
			if !ok {
				t.Errorf("ConfigMap %s %s: %q is not name = value", cm, file, line)
			}
			k = strings.TrimSpace(k)
			conf[k] = append(conf[k], strings.TrimSpace(v))
		}
		return conf
	}
	t.Fatalf("--config=%s: no ConfigMap mounted there (volume's ConfigMap %q)", path, cm)
	return nil
}

// flags returns a container's --name=value args (the last of each).
func flags(t testing.TB, c any) map[string]string {
	t.Helper()
	m := map[string]string{}
	for _, a := range list(c, "args") {
		s, _ := a.(string)
		if k, v, ok := strings.Cut(strings.TrimLeft(s, "-"), "="); ok && strings.HasPrefix(s, "-") {
			m[k] = v
		} else if strings.HasPrefix(s, "-") {
			m[k] = "true"
		}
	}
	return m
}

func port(t testing.TB, what, hostport string) string {
	t.Helper()
	i := strings.LastIndex(hostport, ":")
	if _, err := strconv.Atoi(hostport[i+1:]); i < 0 || err != nil {
		t.Errorf("%s %q has no port", what, hostport)
		return ""
	}
	return hostport[i+1:]
}

func container(t testing.TB, pod any, name string) any {
	t.Helper()
	for _, c := range list(pod, "containers") {
		if str(c, "name") == name {
			return c
		}
	}
	t.Errorf("no container %s", name)
	return nil
}

// get walks maps by key and lists by index; nil where the path ends.
func get(n any, path ...any) any {
	for _, p := range path {
		switch k := p.(type) {
		case string:
			m, ok := n.(map[string]any)
			if !ok {
				return nil
			}
			n = m[k]
		case int:
			l, ok := n.([]any)
			if !ok || k >= len(l) {
				return nil
			}
			n = l[k]
		}
	}
	return n
}

func str(n any, path ...any) string {
	switch v := get(n, path...).(type) {
	case nil:
		return ""
	case string:
		return v
	case float64:
		return strconv.FormatFloat(v, 'f', -1, 64)
	default:
		return fmt.Sprint(v)
	}
}

func list(n any, path ...any) []any {
	l, _ := get(n, path...).([]any)
	return l
}
