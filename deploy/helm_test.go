package deploy

import (
	"bytes"
	"debug/buildinfo"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"

	"go.yaml.in/yaml/v3"
	appsv1 "k8s.io/api/apps/v1"
	autoscalingv2 "k8s.io/api/autoscaling/v2"
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	policyv1 "k8s.io/api/policy/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	sigsyaml "sigs.k8s.io/yaml"
)

// helmVersion is the Helm the tests use, built from the Go module proxy.
const helmVersion = "v3.22.0"

// kubeVersion is the cluster version the chart is rendered for: the chart
// needs 1.30 or later (preStop sleep), and helm template assumes 1.20.
const kubeVersion = "1.33.0"

const chartDir = "helm/ctxgate"

var helm struct {
	once sync.Once
	path string
	err  error
}

// helmBin is .tools/bin/helm at helmVersion, installed there with go
// install from the module proxy when missing (test.sh installs it first).
func helmBin(t *testing.T) string {
	t.Helper()
	helm.once.Do(func() {
		bin := filepath.Join(repoRoot, ".tools", "bin")
		helm.path = filepath.Join(bin, "helm")
		// The module version in the build info is exact; `helm version`
		// says only v3.22 in a build without release ldflags.
		if bi, err := buildinfo.ReadFile(helm.path); err == nil && bi.Main.Path == "helm.sh/helm/v3" && bi.Main.Version == helmVersion {
			return
		}
		cmd := exec.Command("go", "install", "helm.sh/helm/v3/cmd/helm@"+helmVersion)
		cmd.Env = append(os.Environ(), "GOBIN="+bin)
		if out, err := cmd.CombinedOutput(); err != nil {
			helm.err = fmt.Errorf("go install helm.sh/helm/v3/cmd/helm@%s: %w\n%s", helmVersion, err, out)
		}
	})
	need(t, "helm "+helmVersion, "./test.sh installs it into .tools/bin", helm.err)
	return helm.path
}

// valueSet is one way of installing the chart that the tests render, with
// what it must render.
type valueSet struct {
	name  string
	files []string // under testdata/values
	// redis: the set configures Redis (shared rate limits): the rendered
	// configuration has a redis block, and the NOTES say what it shares.
	redis bool

	replicas                                               int32 // 0: the autoscaler decides
	pdb, hpa, networkPolicy, serviceMonitor, adminSvc, tls bool
	policyConfigMap                                        string // the ConfigMap mounted at policy.dir; "": bundles
	secretName                                             string
}

var valueSets = []valueSet{
	{name: "defaults", replicas: 1, policyConfigMap: "ctxgate-policies", secretName: "ctxgate"},
	{
		name: "ha: 3 replicas, Redis, mTLS, HPA, NetworkPolicy, ServiceMonitor", files: []string{"ha.yaml"}, redis: true,
		pdb: true, hpa: true, networkPolicy: true, serviceMonitor: true, adminSvc: true, tls: true,
		policyConfigMap: "ctxgate-policies", secretName: "ctxgate",
	},
	{
		name: "ha with Redis over TLS, its password from a mounted Secret", files: []string{"ha.yaml", "redis-tls.yaml"}, redis: true,
		pdb: true, hpa: true, networkPolicy: true, serviceMonitor: true, adminSvc: true, tls: true,
		policyConfigMap: "ctxgate-policies", secretName: "ctxgate",
	},
	{name: "oidc and two upstreams", files: []string{"oidc.yaml"}, replicas: 1, policyConfigMap: "ctxgate-policies", secretName: "ctxgate"},
	{name: "own policy ConfigMap", files: []string{"own-policy.yaml"}, replicas: 1, adminSvc: true, policyConfigMap: "site-policies", secretName: "gateway-secrets"},
	{name: "OPA bundles", files: []string{"bundles.yaml"}, replicas: 1, secretName: "ctxgate"},
}

func (vs valueSet) args() []string {
	var args []string
	for _, f := range vs.files {
		args = append(args, "-f", filepath.Join("testdata", "values", f))
	}
	return args
}

func helmTemplate(t *testing.T, args ...string) (string, error) {
	t.Helper()
	cmd := exec.Command(helmBin(t), append([]string{"template", "ctxgate", chartDir, "--namespace", "mcp", "--kube-version", kubeVersion}, args...)...)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return "", fmt.Errorf("helm template: %w\n%s", err, stderr.String())
	}
	return string(out), nil
}

// TestChartLint runs helm lint --strict on each value set.
func TestChartLint(t *testing.T) {
	for _, vs := range valueSets {
		t.Run(vs.name, func(t *testing.T) {
			args := append([]string{"lint", "--strict", chartDir, "--namespace", "mcp", "--kube-version", kubeVersion}, vs.args()...)
			out, err := exec.Command(helmBin(t), args...).CombinedOutput()
			if err != nil || !strings.Contains(string(out), "0 chart(s) failed") {
				t.Fatalf("helm %s: %v\n%s", strings.Join(args, " "), err, out)
			}
		})
	}
}

// manifests are the objects one helm template rendered, decoded strictly.
type manifests struct {
	deployment      *appsv1.Deployment
	services        map[string]*corev1.Service
	configMaps      map[string]*corev1.ConfigMap
	serviceAccounts []*corev1.ServiceAccount
	pdb             *policyv1.PodDisruptionBudget
	hpa             *autoscalingv2.HorizontalPodAutoscaler
	networkPolicy   *networkingv1.NetworkPolicy
	serviceMonitor  *serviceMonitor
}

// serviceMonitor is the part of prometheus-operator's ServiceMonitor
// (monitoring.coreos.com/v1) the chart writes, with the CRD's field names:
// a field the chart renders that is not here fails the strict decode.
type serviceMonitor struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata"`
	Spec              struct {
		Selector  metav1.LabelSelector `json:"selector"`
		Endpoints []struct {
			Port          string `json:"port"`
			Path          string `json:"path"`
			Interval      string `json:"interval"`
			ScrapeTimeout string `json:"scrapeTimeout"`
			Authorization *struct {
				Type        string                   `json:"type"`
				Credentials corev1.SecretKeySelector `json:"credentials"`
			} `json:"authorization"`
		} `json:"endpoints"`
	} `json:"spec"`
}

var docSeparator = regexp.MustCompile(`(?m)^---\s*$`)

// decodeManifests decodes every document into its Kubernetes API type;
// unknown fields, unknown kinds, duplicate keys and a second object of a
// kind the chart renders once are errors.
func decodeManifests(rendered string) (*manifests, error) {
	m := &manifests{services: map[string]*corev1.Service{}, configMaps: map[string]*corev1.ConfigMap{}}
	for _, doc := range docSeparator.Split(rendered, -1) {
		js, err := sigsyaml.YAMLToJSONStrict([]byte(doc))
		if err != nil {
			return nil, fmt.Errorf("%w\n%s", err, doc)
		}
		if string(js) == "null" {
			continue // only comments
		}
		var tm metav1.TypeMeta
		if err := json.Unmarshal(js, &tm); err != nil {
			return nil, err
		}
		obj, err := newObject(tm)
		if err != nil {
			return nil, fmt.Errorf("%w:\n%s", err, doc)
		}
		dec := json.NewDecoder(bytes.NewReader(js))
		dec.DisallowUnknownFields()
		if err := dec.Decode(obj); err != nil {
			return nil, fmt.Errorf("%s %s: %w", tm.APIVersion, tm.Kind, err)
		}
		if err := m.add(obj); err != nil {
			return nil, err
		}
	}
	if m.deployment == nil {
		return nil, errors.New("no Deployment")
	}
	return m, nil
}

// newObject is the API type of a rendered kind.
func newObject(tm metav1.TypeMeta) (any, error) {
	switch tm.APIVersion + " " + tm.Kind {
	case "apps/v1 Deployment":
		return &appsv1.Deployment{}, nil
	case "v1 Service":
		return &corev1.Service{}, nil
	case "v1 ConfigMap":
		return &corev1.ConfigMap{}, nil
	case "v1 ServiceAccount":
		return &corev1.ServiceAccount{}, nil
	case "policy/v1 PodDisruptionBudget":
		return &policyv1.PodDisruptionBudget{}, nil
	case "autoscaling/v2 HorizontalPodAutoscaler":
		return &autoscalingv2.HorizontalPodAutoscaler{}, nil
	case "networking.k8s.io/v1 NetworkPolicy":
		return &networkingv1.NetworkPolicy{}, nil
	case "monitoring.coreos.com/v1 ServiceMonitor":
		return &serviceMonitor{}, nil
	}
	// Secrets included: the chart never renders secret values.
	return nil, fmt.Errorf("unexpected object %s %s", tm.APIVersion, tm.Kind)
}

// add files a decoded object; the chart renders one of each kind but
// Services and ConfigMaps.
func (m *manifests) add(obj any) error {
	once := func(set bool) error {
		if set {
			return fmt.Errorf("a second %T", obj)
		}
		return nil
	}
	var err error
	switch o := obj.(type) {
	case *appsv1.Deployment:
		err, m.deployment = once(m.deployment != nil), o
	case *corev1.Service:
		err, m.services[o.Name] = once(m.services[o.Name] != nil), o
	case *corev1.ConfigMap:
		err, m.configMaps[o.Name] = once(m.configMaps[o.Name] != nil), o
	case *corev1.ServiceAccount:
		m.serviceAccounts = append(m.serviceAccounts, o)
	case *policyv1.PodDisruptionBudget:
		err, m.pdb = once(m.pdb != nil), o
	case *autoscalingv2.HorizontalPodAutoscaler:
		err, m.hpa = once(m.hpa != nil), o
	case *networkingv1.NetworkPolicy:
		err, m.networkPolicy = once(m.networkPolicy != nil), o
	case *serviceMonitor:
		err, m.serviceMonitor = once(m.serviceMonitor != nil), o
	}
	return err
}

func render(t *testing.T, vs valueSet) *manifests {
	t.Helper()
	out, err := helmTemplate(t, vs.args()...)
	if err != nil {
		t.Fatal(err)
	}
	m, err := decodeManifests(out)
	if err != nil {
		t.Fatal(err)
	}
	return m
}

// gatewayContainer is the Deployment's one container.
func (m *manifests) gatewayContainer(t *testing.T) *corev1.Container {
	t.Helper()
	cs := m.deployment.Spec.Template.Spec.Containers
	if len(cs) != 1 || cs[0].Name != "ctxgate" {
		t.Fatalf("want one container named ctxgate, got %d", len(cs))
	}
	return &cs[0]
}

// renderedConfig is the ctxgate configuration the chart rendered.
func (m *manifests) renderedConfig(t *testing.T) string {
	t.Helper()
	cm, ok := m.configMaps["ctxgate-config"]
	if !ok {
		t.Fatal("no ConfigMap ctxgate-config")
	}
	cfg, ok := cm.Data["ctxgate.yaml"]
	if !ok {
		t.Fatalf("ConfigMap ctxgate-config has no ctxgate.yaml: %v", keys(cm.Data))
	}
	return cfg
}

func keys[V any](m map[string]V) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	return out
}

// secretStandIns are values for the container's environment as the
// kubelet would set it from the Secrets: stand-ins of the right shape.
func secretStandIns(c *corev1.Container) map[string]string {
	env := map[string]string{}
	for _, e := range c.Env {
		switch {
		case e.ValueFrom == nil:
			env[e.Name] = e.Value
		case e.ValueFrom.SecretKeyRef != nil && strings.HasSuffix(e.Name, "_SHA256"):
			env[e.Name] = sha256Hex(e.Name)
		case e.ValueFrom.SecretKeyRef != nil:
			env[e.Name] = "stand-in-secret-value-of-32-bytes-for-" + e.Name
		}
	}
	return env
}

// yamlDoc parses YAML into a node tree, to read or edit by key path.
func yamlDoc(t *testing.T, s string) *yaml.Node {
	t.Helper()
	var doc yaml.Node
	if err := yaml.Unmarshal([]byte(s), &doc); err != nil {
		t.Fatal(err)
	}
	return doc.Content[0]
}

// lookup finds the value of key in a mapping node.
func lookup(n *yaml.Node, key string) *yaml.Node {
	if n == nil || n.Kind != yaml.MappingNode {
		return nil
	}
	for i := 0; i+1 < len(n.Content); i += 2 {
		if n.Content[i].Value == key {
			return n.Content[i+1]
		}
	}
	return nil
}

func encodeYAML(t *testing.T, n *yaml.Node) []byte {
	t.Helper()
	b, err := yaml.Marshal(n)
	if err != nil {
		t.Fatal(err)
	}
	return b
}
