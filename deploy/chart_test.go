package deploy

import (
	"bytes"
	"maps"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"go.yaml.in/yaml/v3"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	sigsyaml "sigs.k8s.io/yaml"
)

// TestChart renders each value set, decodes it strictly (helm_test.go) and
// checks the hardening, the objects each set asks for, that no secret
// value is in a ConfigMap, and that the gateway accepts the configuration
// and compiles the policies it renders.
func TestChart(t *testing.T) {
	for _, vs := range valueSets {
		t.Run(vs.name, func(t *testing.T) {
			m := render(t, vs)
			cfg := m.renderedConfig(t)
			checkHardening(t, m, cfg)
			checkObjects(t, m, vs)
			checkNoSecretValues(t, m)
			checkSecretRefs(t, m, vs)
			checkConfigAccepted(t, m, vs, cfg)
			checkPolicies(t, m, vs, cfg)
		})
	}
}

func checkHardening(t *testing.T, m *manifests, cfg string) {
	t.Helper()
	pod := m.deployment.Spec.Template.Spec
	c := m.gatewayContainer(t)
	psc := pod.SecurityContext
	if psc == nil || psc.RunAsNonRoot == nil || !*psc.RunAsNonRoot || psc.RunAsUser == nil || *psc.RunAsUser == 0 {
		t.Errorf("pod securityContext %+v: want runAsNonRoot and a non-zero runAsUser", psc)
	}
	if psc == nil || psc.SeccompProfile == nil || psc.SeccompProfile.Type != corev1.SeccompProfileTypeRuntimeDefault {
		t.Error("pod seccompProfile is not RuntimeDefault")
	}
	if pod.AutomountServiceAccountToken == nil || *pod.AutomountServiceAccountToken {
		t.Error("the pod mounts a service account token; the gateway never calls the API")
	}
	sc := c.SecurityContext
	switch {
	case sc == nil:
		t.Fatal("the container has no securityContext")
	case sc.ReadOnlyRootFilesystem == nil || !*sc.ReadOnlyRootFilesystem:
		t.Error("readOnlyRootFilesystem is not true")
	case sc.AllowPrivilegeEscalation == nil || *sc.AllowPrivilegeEscalation:
		t.Error("allowPrivilegeEscalation is not false")
	case sc.Privileged != nil && *sc.Privileged:
		t.Error("privileged")
	case sc.Capabilities == nil || !slices.Contains(sc.Capabilities.Drop, "ALL") || len(sc.Capabilities.Add) > 0:
		t.Errorf("capabilities %+v: want drop ALL, add none", sc.Capabilities)
	}

	doc := yamlDoc(t, cfg)
	ports := map[string]int32{}
	for _, p := range c.Ports {
		ports[p.Name] = p.ContainerPort
	}
	for name, listen := range map[string]string{"http": lookup(lookup(doc, "server"), "listen").Value, "admin": lookup(lookup(doc, "admin"), "listen").Value} {
		host, port, err := net.SplitHostPort(listen)
		if err != nil || host != "0.0.0.0" || port != strconv.Itoa(int(ports[name])) {
			t.Errorf("container port %s is %d, but the configuration listens on %s", name, ports[name], listen)
		}
	}
	for _, p := range []struct {
		name  string
		probe *corev1.Probe
		path  string
	}{{"readiness", c.ReadinessProbe, "/readyz"}, {"liveness", c.LivenessProbe, "/healthz"}} {
		if p.probe == nil || p.probe.HTTPGet == nil || p.probe.HTTPGet.Path != p.path || p.probe.HTTPGet.Port != intstr.FromString("admin") {
			t.Errorf("%s probe %+v: want GET %s on the admin port", p.name, p.probe, p.path)
		}
	}

	// The kubelet's SIGKILL must not cut the drain short.
	shutdown, err := time.ParseDuration(lookup(lookup(doc, "server"), "shutdown_timeout").Value)
	if err != nil {
		t.Fatal(err)
	}
	if c.Lifecycle == nil || c.Lifecycle.PreStop == nil || c.Lifecycle.PreStop.Sleep == nil {
		t.Fatal("no preStop sleep: endpoints would still send requests after SIGTERM")
	}
	budget := time.Duration(c.Lifecycle.PreStop.Sleep.Seconds)*time.Second + shutdown
	if grace := pod.TerminationGracePeriodSeconds; grace == nil || time.Duration(*grace)*time.Second <= budget {
		t.Errorf("terminationGracePeriodSeconds %v does not exceed preStop + shutdown_timeout (%s)", grace, budget)
	}

	// Only emptyDirs are writable; the configuration is mounted where the
	// command reads it, the policies where policy.dir says.
	volumes := map[string]corev1.Volume{}
	for _, v := range pod.Volumes {
		volumes[v.Name] = v
	}
	mounts := map[string]string{}
	for _, vm := range c.VolumeMounts {
		mounts[vm.Name] = vm.MountPath
		if v := volumes[vm.Name]; !vm.ReadOnly && v.EmptyDir == nil {
			t.Errorf("volume %s is mounted writable", vm.Name)
		}
	}
	if len(c.Args) != 3 || c.Args[0] != "serve" || c.Args[1] != "--config" {
		t.Fatalf("args %q: want serve --config FILE", c.Args)
	}
	if filepath.Dir(c.Args[2]) != mounts["config"] || volumes["config"].ConfigMap == nil || volumes["config"].ConfigMap.Name != "ctxgate-config" || filepath.Base(c.Args[2]) != "ctxgate.yaml" {
		t.Errorf("--config %s is not the ctxgate.yaml of the mounted ConfigMap ctxgate-config (%v)", c.Args[2], mounts)
	}
	dir := lookup(lookup(doc, "policy"), "dir")
	switch {
	case dir == nil && lookup(lookup(lookup(doc, "policy"), "opa"), "bundles") == nil:
		t.Error("neither policy.dir nor policy.opa.bundles")
	case dir == nil && mounts["policies"] != "":
		t.Errorf("policies mounted at %s, but the policy comes from bundles", mounts["policies"])
	case dir != nil && mounts["policies"] != dir.Value:
		t.Errorf("policy.dir %s is not where the policies are mounted (%s)", dir.Value, mounts["policies"])
	}
}

func checkObjects(t *testing.T, m *manifests, vs valueSet) {
	t.Helper()
	d := m.deployment
	selector := d.Spec.Selector.MatchLabels
	if !isSubset(selector, d.Spec.Template.Labels) {
		t.Errorf("the selector %v does not match the pod labels %v", selector, d.Spec.Template.Labels)
	}
	switch {
	case vs.hpa && d.Spec.Replicas != nil:
		t.Error("with the autoscaler, the Deployment must not set replicas (each upgrade would reset them)")
	case !vs.hpa && (d.Spec.Replicas == nil || *d.Spec.Replicas != vs.replicas):
		t.Errorf("replicas %v, want %d", d.Spec.Replicas, vs.replicas)
	}
	if (m.hpa != nil) != vs.hpa {
		t.Errorf("HorizontalPodAutoscaler rendered: %v, want %v", m.hpa != nil, vs.hpa)
	}
	if m.hpa != nil && (m.hpa.Spec.ScaleTargetRef.Kind != "Deployment" || m.hpa.Spec.ScaleTargetRef.Name != d.Name) {
		t.Errorf("the autoscaler scales %+v, not the Deployment", m.hpa.Spec.ScaleTargetRef)
	}
	if (m.pdb != nil) != vs.pdb {
		t.Errorf("PodDisruptionBudget rendered: %v, want %v", m.pdb != nil, vs.pdb)
	}
	if m.pdb != nil && !maps.Equal(m.pdb.Spec.Selector.MatchLabels, selector) {
		t.Errorf("the PodDisruptionBudget selects %v", m.pdb.Spec.Selector.MatchLabels)
	}

	svc := m.services["ctxgate"]
	if svc == nil {
		t.Fatal("no Service ctxgate")
	}
	if len(svc.Spec.Ports) != 1 || svc.Spec.Ports[0].TargetPort != intstr.FromString("http") || !maps.Equal(svc.Spec.Selector, selector) {
		t.Errorf("Service ctxgate %+v: want exactly the http port, selecting the pods", svc.Spec)
	}
	admin := m.services["ctxgate-admin"]
	if (admin != nil) != vs.adminSvc {
		t.Errorf("admin Service rendered: %v, want %v (the admin port is not exposed unless asked)", admin != nil, vs.adminSvc)
	}
	if admin != nil && (admin.Spec.Type != corev1.ServiceTypeClusterIP || len(admin.Spec.Ports) != 1 || admin.Spec.Ports[0].TargetPort != intstr.FromString("admin")) {
		t.Errorf("admin Service %+v: want ClusterIP with the admin port only", admin.Spec)
	}

	if (m.networkPolicy != nil) != vs.networkPolicy {
		t.Errorf("NetworkPolicy rendered: %v, want %v", m.networkPolicy != nil, vs.networkPolicy)
	}
	if np := m.networkPolicy; np != nil {
		if !maps.Equal(np.Spec.PodSelector.MatchLabels, selector) {
			t.Errorf("the NetworkPolicy selects %v", np.Spec.PodSelector.MatchLabels)
		}
		for _, rule := range np.Spec.Ingress {
			for _, p := range rule.Ports {
				if p.Port != nil && *p.Port == intstr.FromString("admin") && len(rule.From) == 0 {
					t.Error("the NetworkPolicy opens the admin port to everyone")
				}
			}
		}
	}

	if (m.serviceMonitor != nil) != vs.serviceMonitor {
		t.Errorf("ServiceMonitor rendered: %v, want %v", m.serviceMonitor != nil, vs.serviceMonitor)
	}
	if sm := m.serviceMonitor; sm != nil {
		if admin == nil || !isSubset(sm.Spec.Selector.MatchLabels, admin.Labels) || isSubset(sm.Spec.Selector.MatchLabels, svc.Labels) {
			t.Errorf("the ServiceMonitor selects %v: want the admin Service only", sm.Spec.Selector.MatchLabels)
		}
		for _, ep := range sm.Spec.Endpoints {
			if admin != nil && ep.Port != admin.Spec.Ports[0].Name || ep.Path != "/metrics" || ep.Authorization == nil || ep.Authorization.Credentials.Name == "" {
				t.Errorf("ServiceMonitor endpoint %+v: want /metrics on the admin port with the admin token", ep)
			}
		}
	}

	pod := d.Spec.Template.Spec
	hasTLS := slices.ContainsFunc(pod.Volumes, func(v corev1.Volume) bool { return v.Name == "tls" && v.Secret != nil && v.Secret.SecretName != "" })
	if hasTLS != vs.tls {
		t.Errorf("TLS volume from a Secret: %v, want %v", hasTLS, vs.tls)
	}
	i := slices.IndexFunc(pod.Volumes, func(v corev1.Volume) bool { return v.Name == "policies" })
	switch {
	case vs.policyConfigMap == "" && i >= 0:
		t.Error("a policies volume, but the policy comes from OPA bundles")
	case vs.policyConfigMap != "" && (i < 0 || pod.Volumes[i].ConfigMap == nil || pod.Volumes[i].ConfigMap.Name != vs.policyConfigMap):
		t.Errorf("the policies volume is not ConfigMap %s", vs.policyConfigMap)
	}
	_, rendered := m.configMaps["ctxgate-policies"]
	if rendered != (vs.policyConfigMap == "ctxgate-policies") {
		t.Errorf("policy ConfigMap rendered: %v, with policy ConfigMap %s", rendered, vs.policyConfigMap)
	}
}

func isSubset(sub, of map[string]string) bool {
	for k, v := range sub {
		if of[k] != v {
			return false
		}
	}
	return len(sub) > 0
}

// envRef is a value that only names an environment variable.
var envRef = regexp.MustCompile(`^\$\{[A-Za-z_][A-Za-z0-9_]*(:-)?\}$`)

// secretKey names configuration keys whose values are secrets; _file
// keys, token_url and the like name where secrets are, not what.
var secretKey = regexp.MustCompile(`(?i)(secret|password|token|sha256|keys?)$`)

// checkNoSecretValues walks every YAML or JSON value in every ConfigMap:
// a secret-looking key must hold ${NAME} references only, and so must a
// header credential's value.
func checkNoSecretValues(t *testing.T, m *manifests) {
	t.Helper()
	for name, cm := range m.configMaps {
		if len(cm.BinaryData) > 0 {
			t.Errorf("ConfigMap %s has binaryData", name)
		}
		for key, data := range cm.Data {
			if !strings.HasSuffix(key, ".yaml") && !strings.HasSuffix(key, ".json") {
				continue
			}
			var doc yaml.Node
			if err := yaml.Unmarshal([]byte(data), &doc); err != nil {
				t.Errorf("ConfigMap %s key %s: %v", name, key, err)
				continue
			}
			walkSecrets(t, name+"/"+key, "", &doc, false)
		}
	}
}

func walkSecrets(t *testing.T, where, path string, n *yaml.Node, secret bool) {
	t.Helper()
	switch n.Kind {
	case yaml.DocumentNode:
		for _, c := range n.Content {
			walkSecrets(t, where, path, c, secret)
		}
	case yaml.SequenceNode:
		for _, c := range n.Content {
			walkSecrets(t, where, path+"[]", c, secret)
		}
	case yaml.MappingNode:
		for i := 0; i+1 < len(n.Content); i += 2 {
			k := n.Content[i].Value
			s := secretKey.MatchString(k) || (k == "value" && strings.HasSuffix(path, ".header"))
			walkSecrets(t, where, path+"."+k, n.Content[i+1], s)
		}
	case yaml.ScalarNode:
		if secret && n.Value != "" && !envRef.MatchString(n.Value) && n.Tag != "!!bool" {
			t.Errorf("%s: %s holds a value, not a ${NAME} reference to a Secret", where, path)
		}
	}
}

// checkSecretRefs: every secret the container reads comes from a Secret
// by reference; the gateway's own come from the release's Secret.
func checkSecretRefs(t *testing.T, m *manifests, vs valueSet) {
	t.Helper()
	c := m.gatewayContainer(t)
	for _, e := range c.Env {
		if strings.HasPrefix(e.Name, "CTXGATE_") {
			ref := e.ValueFrom
			if ref == nil || ref.SecretKeyRef == nil {
				t.Errorf("env %s is not from a Secret", e.Name)
				continue
			}
			if ref.SecretKeyRef.Name != vs.secretName {
				t.Errorf("env %s comes from Secret %s, want %s", e.Name, ref.SecretKeyRef.Name, vs.secretName)
			}
			optional := ref.SecretKeyRef.Optional != nil && *ref.SecretKeyRef.Optional
			if optional != (e.Name == "CTXGATE_SESSION_KEY_OLD") {
				t.Errorf("env %s: optional %v; only the old session key may be missing", e.Name, optional)
			}
		}
	}
	for _, want := range []string{"CTXGATE_SESSION_KEY", "CTXGATE_ADMIN_TOKEN_SHA256"} {
		if !slices.ContainsFunc(c.Env, func(e corev1.EnvVar) bool { return e.Name == want }) {
			t.Errorf("env %s is not set", want)
		}
	}
}

// checkConfigAccepted runs `ctxgate check` on the rendered configuration
// with the environment the container gets (stand-ins for Secret values):
// a ${NAME} the Deployment does not set is refused, too.
func checkConfigAccepted(t *testing.T, m *manifests, vs valueSet, cfg string) {
	t.Helper()
	env := secretStandIns(m.gatewayContainer(t))
	// check compiles the policy: the rendered ConfigMap's policies where the
	// chart renders them, else (the operator's own ConfigMap) the shipped ones.
	policies := filepath.Join(repoRoot, "policies")
	if cm, ok := m.configMaps["ctxgate-policies"]; ok {
		policies = t.TempDir()
		for key, data := range cm.Data {
			write(t, filepath.Join(policies, key), []byte(data))
		}
	}
	path := withStandIns(t, []byte(cfg), policies)
	cfg = readFile(t, path)
	out, err := runCtxgate(t, env, "check", "--config", path)
	if err != nil {
		t.Fatalf("ctxgate check refuses the rendered configuration: %v\n%s\n%s", err, out, cfg)
	}
	if got := lookup(yamlDoc(t, cfg), "redis") != nil; got != vs.redis {
		t.Errorf("rendered configuration has a redis block: %v, want %v", got, vs.redis)
	}
}

// checkPolicies writes the rendered policy ConfigMap out as the kubelet
// would mount it and has the gateway load, compile and evaluate it with
// the rendered policy settings (`ctxgate policy eval`).
func checkPolicies(t *testing.T, m *manifests, vs valueSet, cfg string) {
	t.Helper()
	cm, ok := m.configMaps["ctxgate-policies"]
	if !ok {
		return // the operator's own ConfigMap (checkObjects checked the mount)
	}
	dir := t.TempDir()
	policies := filepath.Join(dir, "policies")
	if err := os.Mkdir(policies, 0o755); err != nil {
		t.Fatal(err)
	}
	for key, data := range cm.Data {
		if !strings.HasSuffix(key, ".rego") && !strings.HasSuffix(key, ".json") {
			t.Errorf("policy ConfigMap key %s is neither .rego nor .json", key)
		}
		write(t, filepath.Join(policies, key), []byte(data))
	}
	doc := yamlDoc(t, cfg)
	lookup(lookup(doc, "policy"), "dir").Value = policies
	path := filepath.Join(dir, "ctxgate.yaml")
	write(t, path, encodeYAML(t, doc))
	input := filepath.Join(dir, "input.json")
	write(t, input, []byte(`{"principal":{"id":"api_key:ci","kind":"api_key","scopes":[],"groups":[]},"route":"docs","upstream":"docs","method":"tools/list","phase":"request","protocol":{"version":"2025-11-25","era":"legacy"},"source":{"ip":"10.0.0.1"}}`))
	out, err := runCtxgate(t, secretStandIns(m.gatewayContainer(t)), "policy", "eval", "--config", path, "--input", input)
	if err != nil || !strings.Contains(out, `"allow": true`) {
		t.Fatalf("ctxgate policy eval with the rendered policies: %v\n%s", err, out)
	}
}

func write(t *testing.T, path string, data []byte) {
	t.Helper()
	if err := os.WriteFile(path, data, 0o600); err != nil {
		t.Fatal(err)
	}
}

// TestChartPoliciesMatchRepo: the chart's copies of the shipped policies
// (Helm reads files inside the chart only) are the repository's.
func TestChartPoliciesMatchRepo(t *testing.T) {
	repo := map[string][]byte{}
	for _, pattern := range []string{"policies/*.rego", "policies/examples/*.rego"} {
		files, err := filepath.Glob(filepath.Join(repoRoot, pattern))
		if err != nil {
			t.Fatal(err)
		}
		for _, f := range files {
			if strings.HasSuffix(f, "_test.rego") {
				continue
			}
			b, err := os.ReadFile(f)
			if err != nil {
				t.Fatal(err)
			}
			if _, dup := repo[filepath.Base(f)]; dup {
				t.Fatalf("two policies named %s: the chart's flat ConfigMap cannot hold both", filepath.Base(f))
			}
			repo[filepath.Base(f)] = b
		}
	}
	chart, err := filepath.Glob(filepath.Join(chartDir, "policies", "*"))
	if err != nil {
		t.Fatal(err)
	}
	if len(chart) != len(repo) {
		t.Errorf("the chart has %d policy files, the repository %d non-test .rego files", len(chart), len(repo))
	}
	for _, f := range chart {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		if want, ok := repo[filepath.Base(f)]; !ok || !bytes.Equal(b, want) {
			t.Errorf("%s differs from the repository's policies (cp policies/... %s)", f, f)
		}
	}
}

// TestChartRejectsBadValues: values.schema.json refuses typos, wrong types
// and secrets written inline, naming the value.
func TestChartRejectsBadValues(t *testing.T) {
	tests := []struct {
		name string
		set  string
		want string
	}{
		{name: "unknown key", set: "replicsCount=3", want: "replicsCount"},
		{name: "no replicas", set: "replicaCount=0", want: "replicaCount"},
		{name: "wrong type", set: "autoscaling.enabled=yes", want: "autoscaling"},
		{name: "service type", set: "service.type=Ingress", want: "service"},
		{name: "inline header secret", set: "upstreams[0].name=t,upstreams[0].url=http://t:1/mcp,upstreams[0].credentials.header.name=X-API-Key,upstreams[0].credentials.header.value=hunter2", want: "value"},
		{name: "inline client secret", set: "upstreams[0].name=t,upstreams[0].url=http://t:1/mcp,upstreams[0].credentials.oauth2_client_credentials.client_secret=hunter2", want: "client_secret"},
		{name: "TLS without a Secret", set: "tls.enabled=true", want: "secretName"},
		{name: "no upstreams", set: "upstreams=null", want: "upstreams"},
		{name: "secretEnv shadows the gateway's own", set: "secretEnv[0].name=CTXGATE_SESSION_KEY,secretEnv[0].secretName=s,secretEnv[0].key=k", want: "secretEnv"},
		{name: "ServiceMonitor without the token Secret", set: "metrics.serviceMonitor.enabled=true", want: "tokenSecret.name"},
		{name: "redis URL scheme", set: "redis.url=http://redis:6379", want: "redis"},
		{name: "inline bundle service token", set: "policy.opa.services.acme.url=https://b.example.com,policy.opa.services.acme.credentials.bearer.token=hunter2", want: "token"},
		{name: "OPA persistence outside the state directory", set: "policy.opa.persistence_directory=/opa", want: "persistence_directory"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			out, err := helmTemplate(t, "--set", tt.set)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("helm template --set %s: %v, want an error naming %q\n%.2000s", tt.set, err, tt.want, out)
			}
		})
	}
}

// TestChartNotes renders the chart's NOTES (helm template skips them) for
// each value set: they must tell the operator how to create every Secret
// key the pod needs, and warn about what does not work yet.
func TestChartNotes(t *testing.T) {
	for _, vs := range valueSets {
		t.Run(vs.name, func(t *testing.T) {
			notes := renderNotes(t, vs)
			want := []string{"kubectl -n mcp create secret generic " + vs.secretName, "session-key=", "admin-token-sha256="}
			m := render(t, vs)
			for _, e := range m.gatewayContainer(t).Env {
				if ref := e.ValueFrom; ref != nil && ref.SecretKeyRef != nil {
					want = append(want, ref.SecretKeyRef.Key)
				}
			}
			if vs.redis {
				want = append(want, "the replicas share their rate limits and idempotency keys on\nRedis")
			}
			if vs.serviceMonitor {
				want = append(want, "Prometheus sends the admin token itself")
			}
			for _, w := range want {
				if !strings.Contains(notes, w) {
					t.Errorf("the NOTES do not mention %q:\n%s", w, notes)
				}
			}
		})
	}
}

// renderNotes renders templates/NOTES.txt through a copy of the chart in
// which it is a named template included by a ConfigMap.
func renderNotes(t *testing.T, vs valueSet) string {
	t.Helper()
	chart := filepath.Join(t.TempDir(), "ctxgate")
	if err := os.CopyFS(chart, os.DirFS(chartDir)); err != nil {
		t.Fatal(err)
	}
	notes, err := os.ReadFile(filepath.Join(chart, "templates", "NOTES.txt"))
	if err != nil {
		t.Fatal(err)
	}
	if err := os.Remove(filepath.Join(chart, "templates", "NOTES.txt")); err != nil {
		t.Fatal(err)
	}
	write(t, filepath.Join(chart, "templates", "_notes_test.tpl"), []byte(`{{- define "notes-under-test" -}}`+string(notes)+`{{- end -}}`))
	write(t, filepath.Join(chart, "templates", "notes-test.yaml"), []byte("apiVersion: v1\nkind: ConfigMap\nmetadata: {name: notes}\ndata:\n  notes: {{ include \"notes-under-test\" . | quote }}\n"))
	args := append([]string{"template", "ctxgate", chart, "--namespace", "mcp", "--kube-version", kubeVersion, "--show-only", "templates/notes-test.yaml"}, vs.args()...)
	out, err := exec.Command(helmBin(t), args...).CombinedOutput()
	if err != nil {
		t.Fatalf("helm %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	var cm corev1.ConfigMap
	if err := sigsyaml.UnmarshalStrict(out, &cm); err != nil {
		t.Fatal(err)
	}
	return cm.Data["notes"]
}

func readFile(t *testing.T, path string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}
