package kubernetes_test

import (
	"fmt"
	"math"
	"os"
	"strings"
	"sync"
	"testing"

	"github.com/google/cel-go/cel"
	"github.com/google/cel-go/common/types"
	"sigs.k8s.io/yaml"
)

// A CRD's schema carries rules that JSON Schema cannot say: CEL
// expressions (x-kubernetes-validations) the API server evaluates on every
// object it admits. checkCRDRules evaluates them on the rendered custom
// resources as the API server would on create: schema defaults filled in
// first, transition rules (on oldSelf) left out, an evaluation error (a
// rule reading an absent field) a failure.

// crdRules is the CNPG Cluster CRD's schema, read once.
var crdRules = sync.OnceValues(func() (map[string]any, error) {
	var crd struct {
		Spec struct {
			Names    struct{ Kind string } `json:"names"`
			Versions []struct {
				Schema struct {
					OpenAPIV3Schema map[string]any `json:"openAPIV3Schema"`
				} `json:"schema"`
			} `json:"versions"`
		} `json:"spec"`
	}
	b, err := os.ReadFile(cnpgCRD)
	if err != nil {
		return nil, err
	}
	if err := yaml.Unmarshal(b, &crd); err != nil || len(crd.Spec.Versions) != 1 {
		return nil, fmt.Errorf("%s: want one version: %v", cnpgCRD, err)
	}
	return crd.Spec.Versions[0].Schema.OpenAPIV3Schema, nil
})

var celEnv = sync.OnceValues(func() (*cel.Env, error) {
	return cel.NewEnv(cel.Variable("self", cel.DynType), cel.CrossTypeNumericComparisons(true))
})

// checkCRDRules evaluates the Cluster CRD's rules on every Cluster in objs
// and returns how many rule evaluations ran.
func checkCRDRules(t testing.TB, objs []object) int {
	t.Helper()
	schema, err := crdRules()
	if err != nil {
		t.Fatal(err)
	}
	env, err := celEnv()
	if err != nil {
		t.Fatal(err)
	}
	ran := 0
	for _, o := range objs {
		if o.kind() != "Cluster" || !strings.HasPrefix(str(o.m, "apiVersion"), "postgresql.cnpg.io/") {
			continue
		}
		var walk func(s map[string]any, v any, path string)
		walk = func(s map[string]any, v any, path string) {
			if v == nil {
				return
			}
			rules, _ := s["x-kubernetes-validations"].([]any)
			for _, r := range rules {
				rule, _ := get(r, "rule").(string)
				if strings.Contains(rule, "oldSelf") {
					continue // a transition rule: only on update
				}
				ran++
				ast, iss := env.Compile(rule)
				if iss.Err() != nil {
					t.Errorf("%s %s: rule %q does not compile here: %v", o, path, rule, iss.Err())
					continue
				}
				prg, err := env.Program(ast)
				if err != nil {
					t.Errorf("%s %s: rule %q: %v", o, path, rule, err)
					continue
				}
				out, _, err := prg.Eval(map[string]any{"self": celValue(v)})
				switch {
				case err != nil:
					t.Errorf("%s %s: %s (rule %q: %v)", o, path, str(r, "message"), rule, err)
				case out != types.True:
					t.Errorf("%s %s: %s (rule %q)", o, path, str(r, "message"), rule)
				}
			}
			switch v := v.(type) {
			case map[string]any:
				props, _ := s["properties"].(map[string]any)
				for k, ps := range props {
					ps := ps.(map[string]any)
					if _, set := v[k]; !set && ps["default"] != nil {
						v[k] = ps["default"] // as the API server defaults it
					}
					walk(ps, v[k], path+"/"+k)
				}
				if as, ok := s["additionalProperties"].(map[string]any); ok {
					for k, e := range v {
						walk(as, e, path+"/"+k)
					}
				}
			case []any:
				if is, ok := s["items"].(map[string]any); ok {
					for i, e := range v {
						walk(is, e, fmt.Sprintf("%s/%d", path, i))
					}
				}
			}
		}
		walk(schema, deepCopy(o.m), "")
	}
	return ran
}

// celValue gives JSON's whole numbers as CEL ints, as the API server sees
// fields of type integer.
func celValue(v any) any {
	switch v := v.(type) {
	case float64:
		if v == math.Trunc(v) && math.Abs(v) < 1<<53 {
			return int64(v)
		}
		return v
	case map[string]any:
		m := make(map[string]any, len(v))
		for k, e := range v {
			m[k] = celValue(e)
		}
		return m
	case []any:
		l := make([]any, len(v))
		for i, e := range v {
			l[i] = celValue(e)
		}
		return l
	}
	return v
}

func deepCopy(v any) any {
	switch v := v.(type) {
	case map[string]any:
		m := make(map[string]any, len(v))
		for k, e := range v {
			m[k] = deepCopy(e)
		}
		return m
	case []any:
		l := make([]any, len(v))
		for i, e := range v {
			l[i] = deepCopy(e)
		}
		return l
	}
	return v
}
