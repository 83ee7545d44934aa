package deploy

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"testing"

	monitoringv1 "github.com/prometheus-operator/prometheus-operator/pkg/apis/monitoring/v1"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	kjson "sigs.k8s.io/json"
	"sigs.k8s.io/yaml"
)

// manifests are the objects of deploy/kubernetes, decoded strictly.
type manifests struct {
	namespaces []corev1.Namespace
	daemonSets []appsv1.DaemonSet
	podMons    []monitoringv1.PodMonitor
	rules      []monitoringv1.PrometheusRule
}

// strict decodes YAML as the API server's strict field validation does:
// field names matched case-sensitively (encoding/json, and so
// yaml.UnmarshalStrict, would take "readOnlyRootFileSystem"), unknown and
// duplicate fields refused.
func strict(doc []byte, v any) error {
	j, err := yaml.YAMLToJSONStrict(doc)
	if err != nil {
		return err
	}
	serrs, err := kjson.UnmarshalStrict(j, v, kjson.DisallowDuplicateFields, kjson.DisallowUnknownFields)
	if err != nil {
		return err
	}
	return errors.Join(serrs...)
}

// decodeStrict decodes one YAML document into the Kubernetes type its
// apiVersion and kind name, strictly: a misspelt field is an error, not a
// field the API server drops or refuses at apply time.
func (m *manifests) decodeStrict(doc []byte) error {
	var tm struct {
		APIVersion string `json:"apiVersion"`
		Kind       string `json:"kind"`
	}
	if err := yaml.Unmarshal(doc, &tm); err != nil {
		return err
	}
	switch tm.APIVersion + " " + tm.Kind {
	case "v1 Namespace":
		return decodeInto(doc, &m.namespaces)
	case "apps/v1 DaemonSet":
		return decodeInto(doc, &m.daemonSets)
	case "monitoring.coreos.com/v1 PodMonitor":
		return decodeInto(doc, &m.podMons)
	case "monitoring.coreos.com/v1 PrometheusRule":
		return decodeInto(doc, &m.rules)
	}
	return fmt.Errorf("unexpected object %s %s", tm.APIVersion, tm.Kind)
}

// decodeInto decodes doc strictly as a T and appends it to list.
func decodeInto[T any](doc []byte, list *[]T) error {
	var o T
	if err := strict(doc, &o); err != nil {
		return err
	}
	*list = append(*list, o)
	return nil
}

func loadManifests(t *testing.T) *manifests {
	t.Helper()
	files, _ := filepath.Glob("kubernetes/*.yaml")
	if len(files) == 0 {
		t.Fatal("no manifests in deploy/kubernetes")
	}
	m := &manifests{}
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		for i, doc := range bytes.Split(b, []byte("\n---\n")) {
			if err := m.decodeStrict(doc); err != nil {
				t.Errorf("%s, document %d: %v", f, i+1, err)
			}
		}
	}
	return m
}

// The decoder refuses what the API server would silently drop or reject:
// a misspelt field, a duplicate key, a field of the wrong type.
func TestManifestDecodingIsStrict(t *testing.T) {
	good, err := os.ReadFile("kubernetes/daemonset.yaml")
	if err != nil {
		t.Fatal(err)
	}
	var m manifests
	if err := m.decodeStrict(good); err != nil {
		t.Fatalf("the DaemonSet itself: %v", err)
	}
	for name, bad := range map[string][]byte{
		"misspelt field": bytes.Replace(good, []byte("readOnlyRootFilesystem"), []byte("readOnlyRootFileSystem"), 1),
		"duplicate key":  bytes.Replace(good, []byte("hostPID: true"), []byte("hostPID: true\n      hostPID: false"), 1),
		"wrong type":     bytes.Replace(good, []byte("containerPort: 9464"), []byte("containerPort: metrics"), 1),
		"unknown field":  bytes.Replace(good, []byte("hostPID: true"), []byte("hostPID: true\n      hostPid: true"), 1),
	} {
		if bytes.Equal(bad, good) {
			t.Fatalf("%s: the DaemonSet no longer has the text this test changes", name)
		}
		if err := m.decodeStrict(bad); err == nil {
			t.Errorf("%s: decoded without error", name)
		}
	}
}

// The manifests hold together: what refers to something names what is
// there, and the PrometheusRule holds the plain rules file's groups.
func TestManifests(t *testing.T) {
	m := loadManifests(t)
	if len(m.namespaces) != 1 || len(m.daemonSets) != 1 || len(m.podMons) != 1 || len(m.rules) != 1 {
		t.Fatalf("want one Namespace, DaemonSet, PodMonitor and PrometheusRule; got %d, %d, %d, %d",
			len(m.namespaces), len(m.daemonSets), len(m.podMons), len(m.rules))
	}
	ns := m.namespaces[0].Name
	ds := m.daemonSets[0]
	for _, o := range []struct{ kind, ns string }{{"DaemonSet", ds.Namespace}, {"PodMonitor", m.podMons[0].Namespace}, {"PrometheusRule", m.rules[0].Namespace}} {
		if o.ns != ns {
			t.Errorf("%s in namespace %q, want %q", o.kind, o.ns, ns)
		}
	}
	tmpl := ds.Spec.Template
	if !subset(ds.Spec.Selector.MatchLabels, tmpl.Labels) {
		t.Errorf("the DaemonSet's selector %v does not match its pods' labels %v", ds.Spec.Selector.MatchLabels, tmpl.Labels)
	}
	if !subset(m.podMons[0].Spec.Selector.MatchLabels, tmpl.Labels) {
		t.Errorf("the PodMonitor's selector %v does not match the pods' labels %v", m.podMons[0].Spec.Selector.MatchLabels, tmpl.Labels)
	}
	if len(tmpl.Spec.Containers) != 1 {
		t.Fatalf("want one container, got %d", len(tmpl.Spec.Containers))
	}
	c := tmpl.Spec.Containers[0]
	port := -1
	for _, p := range c.Ports {
		if p.Name == "metrics" {
			port = int(p.ContainerPort)
		}
	}
	if port < 0 {
		t.Fatal("no port named metrics")
	}
	if i := slices.Index(c.Args, "--metrics"); i < 0 || i+1 >= len(c.Args) || !strings.HasSuffix(c.Args[i+1], ":"+strconv.Itoa(port)) {
		t.Errorf("args %q do not serve metrics on the port %d", c.Args, port)
	}
	if a := tmpl.Annotations["prometheus.io/port"]; a != strconv.Itoa(port) {
		t.Errorf("prometheus.io/port %q, want %d", a, port)
	}
	for _, ep := range m.podMons[0].Spec.PodMetricsEndpoints {
		if ep.Port == nil || *ep.Port != "metrics" {
			t.Errorf("the PodMonitor scrapes port %v, want metrics", ep.Port)
		}
	}
	for name, pr := range map[string]*corev1.Probe{"liveness": c.LivenessProbe, "readiness": c.ReadinessProbe} {
		want := map[string]string{"liveness": "/healthz", "readiness": "/readyz"}[name]
		if pr == nil || pr.HTTPGet == nil || pr.HTTPGet.Path != want || pr.HTTPGet.Port.String() != "metrics" {
			t.Errorf("%s probe %+v, want GET %s on the metrics port", name, pr, want)
		}
	}
	vols := map[string]bool{}
	for _, v := range tmpl.Spec.Volumes {
		vols[v.Name] = true
	}
	for _, vm := range c.VolumeMounts {
		if !vols[vm.Name] {
			t.Errorf("volume mount %s names no volume", vm.Name)
		}
		if !vm.ReadOnly {
			t.Errorf("volume mount %s is writable: tcptrace writes nothing on the host", vm.Name)
		}
	}
	sc := c.SecurityContext
	if sc == nil || sc.Privileged != nil && *sc.Privileged || sc.ReadOnlyRootFilesystem == nil || !*sc.ReadOnlyRootFilesystem ||
		sc.Capabilities == nil || !slices.Equal(sc.Capabilities.Drop, []corev1.Capability{"ALL"}) {
		t.Errorf("securityContext %+v: want not privileged, a read-only root and every capability dropped but those added", sc)
	}
	if c.Resources.Limits.Cpu().Value() != 0 {
		t.Errorf("a CPU limit throttles the event reader: events are lost")
	}

	// The PrometheusRule is the rules file under spec (make
	// deploy/kubernetes/prometheusrule.yaml).
	plain, err := os.ReadFile("prometheus/tcptrace.rules.yml")
	if err != nil {
		t.Fatal(err)
	}
	var file struct {
		Groups []monitoringv1.RuleGroup `json:"groups"`
	}
	if err := strict(plain, &file); err != nil {
		t.Fatalf("the rules file as the Operator's rule groups: %v", err)
	}
	a, _ := json.Marshal(file.Groups)
	b, _ := json.Marshal(m.rules[0].Spec.Groups)
	if !reflect.DeepEqual(a, b) {
		t.Errorf("deploy/kubernetes/prometheusrule.yaml is not deploy/prometheus/tcptrace.rules.yml: run make deploy/kubernetes/prometheusrule.yaml")
	}
}

func subset(sel, labels map[string]string) bool {
	if len(sel) == 0 {
		return false
	}
	for k, v := range sel {
		if labels[k] != v {
			return false
		}
	}
	return true
}
