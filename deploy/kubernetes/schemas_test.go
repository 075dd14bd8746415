package kubernetes_test

import (
	"bytes"
	"encoding/json"
	"flag"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"sigs.k8s.io/yaml"
)

// The schemas the manifests are validated against live in testdata/schemas,
// one standalone JSON Schema (draft 4, as kubeconform reads them) per kind,
// named as kubeconform looks them up: kind-group-version.json. They are made
// from two sources, never fetched at test time:
//
//   - Kubernetes' own OpenAPI v3 documents (api/openapi-spec/v3) of
//     kubernetesVersion, from the k8s.io/kubernetes module: `go mod download`
//     puts it in the module cache; it is not a dependency of this module.
//   - CloudNativePG's Cluster CRD, vendored in testdata/cnpg with its licence.
//
// Strict: every object schema that lists its properties allows no other
// (as kubectl apply --validate=strict), so a misspelt field fails.
//
// Regenerate (needs the module proxy for the first):
//
//	go test -run TestSchemas -update
var update = flag.Bool("update", false, "regenerate testdata/schemas from the OpenAPI documents")

// kubernetesVersion is the oldest Kubernetes minor still supported
// upstream: a manifest valid there is valid on the newer ones, since the
// API only adds fields.
const kubernetesVersion = "v1.35.4"

// schemaKinds are the kinds the manifests use, by the OpenAPI document
// that defines them and the name of their definition.
var schemaKinds = []struct{ doc, definition string }{
	{"api__v1_openapi.json", "io.k8s.api.core.v1.ConfigMap"},
	{"api__v1_openapi.json", "io.k8s.api.core.v1.Namespace"},
	{"api__v1_openapi.json", "io.k8s.api.core.v1.Secret"},
	{"api__v1_openapi.json", "io.k8s.api.core.v1.Service"},
	{"apis__apps__v1_openapi.json", "io.k8s.api.apps.v1.StatefulSet"},
	{"apis__batch__v1_openapi.json", "io.k8s.api.batch.v1.Job"},
	{"apis__networking.k8s.io__v1_openapi.json", "io.k8s.api.networking.v1.NetworkPolicy"},
	{"apis__policy__v1_openapi.json", "io.k8s.api.policy.v1.PodDisruptionBudget"},
}

const (
	schemaDir = "testdata/schemas"
	cnpgCRD   = "testdata/cnpg/postgresql.cnpg.io_clusters.yaml"
	// objectMeta is the definition CRD schemas' bare metadata is replaced by.
	objectMeta = "io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta"
)

// TestSchemas checks that testdata/schemas is what the sources give: the
// CRD's always (it is vendored here), Kubernetes' where its module is in
// the module cache. With -update it writes them.
func TestSchemas(t *testing.T) {
	want := map[string][]byte{}

	specDir := kubernetesSpecDir(t)
	var meta map[string]any // ObjectMeta's definitions, for the CRD
	if specDir != "" {
		for _, k := range schemaKinds {
			defs := readOpenAPI(t, filepath.Join(specDir, k.doc))
			name, schema := standalone(t, defs, k.definition)
			want[name] = schema
			if meta == nil {
				meta = reachable(defs, objectMeta)
			}
		}
	} else {
		// Without the spec, take ObjectMeta from the committed schemas.
		var s map[string]any
		mustJSON(t, readFileT(t, filepath.Join(schemaDir, "configmap-v1.json")), &s)
		meta = reachable(s["definitions"].(map[string]any), objectMeta)
	}
	name, schema := crdSchema(t, readFileT(t, cnpgCRD), meta)
	want[name] = schema

	if *update {
		if specDir == "" {
			t.Fatal("-update needs the Kubernetes OpenAPI documents: see kubernetesSpecDir")
		}
		if err := os.RemoveAll(schemaDir); err != nil {
			t.Fatal(err)
		}
		if err := os.MkdirAll(schemaDir, 0o755); err != nil {
			t.Fatal(err)
		}
		for name, b := range want {
			if err := os.WriteFile(filepath.Join(schemaDir, name), b, 0o644); err != nil {
				t.Fatal(err)
			}
		}
		return
	}
	for name, b := range want {
		got, err := os.ReadFile(filepath.Join(schemaDir, name))
		if err != nil || !bytes.Equal(got, b) {
			t.Errorf("%s/%s is not what its source gives (%v): go test -run TestSchemas -update", schemaDir, name, err)
		}
	}
	if specDir == "" {
		t.Logf("k8s.io/kubernetes@%s is not in the module cache: the Kubernetes schemas were not compared with it", kubernetesVersion)
	}
}

// kubernetesSpecDir finds api/openapi-spec/v3 of k8s.io/kubernetes in the
// module cache; with -update it downloads the module first. "" if absent.
func kubernetesSpecDir(t *testing.T) string {
	t.Helper()
	args := []string{"mod", "download", "-json", "k8s.io/kubernetes@" + kubernetesVersion}
	cmd := exec.Command("go", args...)
	if !*update {
		// Only what is cached: no network at test time.
		cmd.Env = append(os.Environ(), "GOPROXY=off")
	}
	out, err := cmd.Output()
	var m struct{ Dir string }
	if err != nil || json.Unmarshal(out, &m) != nil || m.Dir == "" {
		if *update {
			t.Fatalf("go %s: %v\n%s", strings.Join(args, " "), err, out)
		}
		return ""
	}
	return filepath.Join(m.Dir, "api", "openapi-spec", "v3")
}

func readOpenAPI(t *testing.T, path string) map[string]any {
	t.Helper()
	var doc struct {
		Components struct {
			Schemas map[string]any `json:"schemas"`
		} `json:"components"`
	}
	mustJSON(t, readFileT(t, path), &doc)
	return doc.Components.Schemas
}

// standalone makes the JSON Schema of one definition, with every definition
// it reaches under "definitions", and names its file as kubeconform does.
func standalone(t *testing.T, defs map[string]any, root string) (string, []byte) {
	t.Helper()
	def, ok := defs[root].(map[string]any)
	if !ok {
		t.Fatalf("no definition %s", root)
	}
	gvks, _ := def["x-kubernetes-group-version-kind"].([]any)
	if len(gvks) != 1 {
		t.Fatalf("%s: want one group-version-kind, have %v", root, gvks)
	}
	gvk := gvks[0].(map[string]any)
	group, version, kind := gvk["group"].(string), gvk["version"].(string), gvk["kind"].(string)

	out := map[string]any{}
	for name, d := range reachable(defs, root) {
		out[name] = convert(d)
	}
	schema := map[string]any{
		"$schema":     "http://json-schema.org/draft-04/schema#",
		"$ref":        "#/definitions/" + root,
		"definitions": out,
	}
	return schemaFile(kind, group, version), marshal(t, schema)
}

// schemaFile is kubeconform's {{ .ResourceKind }}{{ .KindSuffix }}.json.
func schemaFile(kind, group, version string) string {
	suffix := "-" + version
	if group != "" {
		suffix = "-" + strings.Split(group, ".")[0] + suffix
	}
	return strings.ToLower(kind) + suffix + ".json"
}

// reachable returns root's definition and every one it refers to.
func reachable(defs map[string]any, root string) map[string]any {
	seen := map[string]any{}
	var walk func(n any)
	visit := func(name string) {
		if _, ok := seen[name]; ok {
			return
		}
		seen[name] = defs[name]
		walk(defs[name])
	}
	walk = func(n any) {
		switch n := n.(type) {
		case map[string]any:
			for k, v := range n {
				if ref, ok := v.(string); ok && k == "$ref" {
					visit(strings.TrimPrefix(strings.TrimPrefix(ref, "#/components/schemas/"), "#/definitions/"))
					continue
				}
				walk(v)
			}
		case []any:
			for _, v := range n {
				walk(v)
			}
		}
	}
	visit(root)
	return seen
}

// keptKeywords are the OpenAPI keywords that validate and mean the same in
// JSON Schema draft 4; descriptions, defaults and x-kubernetes-* go.
var keptKeywords = map[string]bool{
	"type": true, "format": true, "enum": true, "required": true, "pattern": true,
	"minimum": true, "maximum": true, "exclusiveMinimum": true, "exclusiveMaximum": true,
	"minLength": true, "maxLength": true, "minItems": true, "maxItems": true, "uniqueItems": true,
	"minProperties": true, "maxProperties": true,
}

// convert turns an OpenAPI v3 schema (a Kubernetes definition, or a CRD's
// structural schema) into JSON Schema draft 4, strict.
func convert(n any) any {
	m, ok := n.(map[string]any)
	if !ok {
		return n
	}
	out := map[string]any{}
	for k, v := range m {
		switch {
		case keptKeywords[k]:
			out[k] = v
		case k == "$ref":
			out[k] = "#/definitions/" + strings.TrimPrefix(strings.TrimPrefix(v.(string), "#/components/schemas/"), "#/definitions/")
		case k == "properties":
			props := map[string]any{}
			for name, p := range v.(map[string]any) {
				props[name] = convert(p)
			}
			out[k] = props
		case k == "items" || k == "additionalProperties" || k == "not":
			out[k] = convert(v)
		case k == "allOf" || k == "anyOf" || k == "oneOf":
			var list []any
			for _, s := range v.([]any) {
				list = append(list, convert(s))
			}
			out[k] = list
		}
	}
	// A structural schema's nullable field may be given as null.
	if m["nullable"] == true {
		if typ, ok := out["type"].(string); ok {
			out["type"] = []any{typ, "null"}
		}
	}
	_, listed := m["properties"]
	_, open := m["additionalProperties"]
	if listed && !open && m["x-kubernetes-preserve-unknown-fields"] != true {
		out["additionalProperties"] = false
	}
	return out
}

// crdSchema makes the JSON Schema of a CRD's served version, its metadata
// checked as ObjectMeta (meta holds ObjectMeta's definitions).
func crdSchema(t *testing.T, src []byte, meta map[string]any) (string, []byte) {
	t.Helper()
	var crd struct {
		Spec struct {
			Group string `json:"group"`
			Names struct {
				Kind string `json:"kind"`
			} `json:"names"`
			Versions []struct {
				Name   string `json:"name"`
				Served bool   `json:"served"`
				Schema struct {
					OpenAPIV3Schema map[string]any `json:"openAPIV3Schema"`
				} `json:"schema"`
			} `json:"versions"`
		} `json:"spec"`
	}
	if err := yaml.Unmarshal(src, &crd); err != nil {
		t.Fatalf("%s: %v", cnpgCRD, err)
	}
	if len(crd.Spec.Versions) != 1 || !crd.Spec.Versions[0].Served {
		t.Fatalf("%s: want one served version, have %d", cnpgCRD, len(crd.Spec.Versions))
	}
	v := crd.Spec.Versions[0]
	root := convert(v.Schema.OpenAPIV3Schema).(map[string]any)
	root["properties"].(map[string]any)["metadata"] = map[string]any{"$ref": "#/definitions/" + objectMeta}
	defs := map[string]any{}
	for name, d := range meta {
		defs[name] = convert(d)
	}
	root["$schema"] = "http://json-schema.org/draft-04/schema#"
	root["definitions"] = defs
	return schemaFile(crd.Spec.Names.Kind, crd.Spec.Group, v.Name), marshal(t, root)
}

// marshal writes JSON with sorted keys and one property per line, so that
// a regenerated schema's diff is readable.
func marshal(t *testing.T, v any) []byte {
	t.Helper()
	b, err := json.MarshalIndent(v, "", " ")
	if err != nil {
		t.Fatal(err)
	}
	return append(b, '\n')
}

func mustJSON(t *testing.T, b []byte, v any) {
	t.Helper()
	if err := json.Unmarshal(b, v); err != nil {
		t.Fatal(err)
	}
}

func readFileT(t testing.TB, path string) []byte {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return b
}
