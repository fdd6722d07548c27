package admin

import (
	"context"
	"net/http"
	"os"
	"reflect"
	"slices"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/gorilla/mux"
	"github.com/prometheus/client_golang/prometheus"
	"go.yaml.in/yaml/v3"

	"github.com/mayu-boot/mayu/pkg/api"
	"github.com/mayu-boot/mayu/pkg/machine"
)

// openAPI is what the tests read of docs/admin-api.yaml.
type openAPI struct {
	OpenAPI string                    `yaml:"openapi"`
	Paths   map[string]map[string]any `yaml:"paths"`
	// Components by kind (schemas, responses, parameters, …) and name.
	Components map[string]map[string]map[string]any `yaml:"components"`
}

func readOpenAPI(t *testing.T) (openAPI, []byte) {
	t.Helper()
	b, err := os.ReadFile("../../docs/admin-api.yaml")
	if err != nil {
		t.Fatal(err)
	}
	var doc openAPI
	if err := yaml.Unmarshal(b, &doc); err != nil {
		t.Fatalf("docs/admin-api.yaml: %v", err)
	}
	if !strings.HasPrefix(doc.OpenAPI, "3.") {
		t.Fatalf("docs/admin-api.yaml: openapi %q, want 3.x", doc.OpenAPI)
	}
	return doc, b
}

// operations are the documented operations: method (lower case) and path
// template, and the operation.
func (doc openAPI) operations() map[[2]string]map[string]any {
	ops := map[[2]string]map[string]any{}
	for path, item := range doc.Paths {
		for key, op := range item {
			if slices.Contains(httpMethods, key) {
				o, _ := op.(map[string]any)
				ops[[2]string{key, path}] = o
			}
		}
	}
	return ops
}

// Each operation's x-mayu-role is the role the admin API really asks
// for it: a viewer's token is refused (403) on exactly the operations
// documented as admin's.
func TestOpenAPIRolesAreTheGuards(t *testing.T) {
	doc, _ := readOpenAPI(t)
	env := newAuthEnv(t, nil)
	for k, op := range doc.operations() {
		method, path := strings.ToUpper(k[0]), k[1]
		role, _ := op["x-mayu-role"].(string)
		want := api.RoleAdmin
		if isRead(method) {
			want = api.RoleViewer
		}
		if role != want {
			t.Errorf("%s %s: x-mayu-role %q, the guard asks for %s", method, path, role, want)
		}
		url := env.srv.URL + strings.NewReplacer("{id}", "m1", "{name}", "a1").Replace(path)
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		req, _ := http.NewRequestWithContext(ctx, method, url, strings.NewReader("{}"))
		req.Header.Set("Authorization", "Bearer "+viewerToken)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			cancel()
			t.Fatalf("%s %s: %v", method, path, err)
		}
		resp.Body.Close()
		cancel()
		if refused := resp.StatusCode == http.StatusForbidden; refused != (role == api.RoleAdmin) || resp.StatusCode == http.StatusUnauthorized {
			t.Errorf("%s %s with a viewer's token: %s (documented role %s)", method, path, resp.Status, role)
		}
	}
}

var httpMethods = []string{"get", "put", "post", "delete", "patch", "head", "options", "trace"}

// Every route the admin API registers is in docs/admin-api.yaml with its
// method and path template, and every operation documented is a route.
func TestOpenAPIHasEveryRoute(t *testing.T) {
	doc, _ := readOpenAPI(t)
	routes := map[string]bool{}
	a, _ := build(Options{})
	err := a.router(prometheus.NewRegistry()).Walk(func(r *mux.Route, _ *mux.Router, _ []*mux.Route) error {
		tmpl, err := r.GetPathTemplate()
		if err != nil {
			return err
		}
		methods, err := r.GetMethods()
		if err != nil {
			t.Errorf("route %s has no methods: document what it answers", tmpl)
			return nil
		}
		for _, m := range methods {
			routes[strings.ToLower(m)+" "+tmpl] = true
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if len(routes) < 10 {
		t.Fatalf("only %d routes walked: %v", len(routes), routes)
	}
	documented := map[string]bool{}
	for k, op := range doc.operations() {
		documented[k[0]+" "+k[1]] = true
		if op["responses"] == nil {
			t.Errorf("%s %s: no responses", k[0], k[1])
		}
	}
	for r := range routes {
		if !documented[r] {
			t.Errorf("route %s is not in docs/admin-api.yaml", r)
		}
	}
	for d := range documented {
		if !routes[d] {
			t.Errorf("docs/admin-api.yaml documents %s, which the admin API does not serve", d)
		}
	}
}

// The schemas of docs/admin-api.yaml name the fields of the wire types,
// no more, no fewer.
func TestOpenAPISchemasMatchTheWireTypes(t *testing.T) {
	doc, raw := readOpenAPI(t)
	types := map[string]any{
		"Error":              api.ErrorBody{},
		"Event":              api.Event{},
		"HistoryEntry":       machine.Event{},
		"Machine":            machine.Machine{},
		"MachineList":        api.MachineList{},
		"AddRequest":         api.AddRequest{},
		"AddMACRequest":      api.AddMACRequest{},
		"Deleted":            api.Deleted{},
		"SecretRotation":     api.SecretRotation{},
		"ConfigView":         api.ConfigView{},
		"Lease":              api.Lease{},
		"Replica":            api.Replica{},
		"ReplicasView":       api.ReplicasView{},
		"AuditEntry":         api.AuditEntry{},
		"AuditList":          api.AuditList{},
		"AddArtifactRequest": api.AddArtifactRequest{},
		"ArtifactHolder":     api.ArtifactHolder{},
		"ArtifactProgress":   api.ArtifactProgress{},
		"Artifact":           api.Artifact{},
		"ArtifactList":       api.ArtifactList{},
	}
	for name, v := range types {
		s, ok := doc.Components["schemas"][name]
		if !ok {
			t.Errorf("schema %s (%T) is missing", name, v)
			continue
		}
		var got []string
		props, _ := s["properties"].(map[string]any)
		for p := range props {
			got = append(got, p)
		}
		sort.Strings(got)
		if want := jsonFields(reflect.TypeOf(v)); !slices.Equal(got, want) {
			t.Errorf("schema %s: properties %v, %T has %v", name, got, v, want)
		}
	}
	// Every reference points at something the document defines.
	for _, line := range strings.Split(string(raw), "\n") {
		_, ref, ok := strings.Cut(line, `$ref: "#/components/`)
		if !ok {
			continue
		}
		ref, _, _ = strings.Cut(ref, `"`)
		kind, name, _ := strings.Cut(ref, "/")
		if _, ok := doc.Components[kind][name]; !ok {
			t.Errorf("$ref to the undefined %s %s", kind, name)
		}
	}
}

// jsonFields are the JSON names of t's fields, sorted.
func jsonFields(t reflect.Type) []string {
	var out []string
	for f := range t.Fields() {
		if !f.IsExported() {
			continue
		}
		name, _, _ := strings.Cut(f.Tag.Get("json"), ",")
		if name == "-" {
			continue
		}
		if name == "" {
			name = f.Name
		}
		out = append(out, name)
	}
	sort.Strings(out)
	return out
}
