package deploy

import (
	"crypto/sha256"
	"debug/elf"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"

	"github.com/ctxgate/ctxgate/upstream/upstreamtest"
)

// imageLabels are the OCI annotations the image must carry.
var imageLabels = []string{
	"org.opencontainers.image.title", "org.opencontainers.image.description",
	"org.opencontainers.image.source", "org.opencontainers.image.version",
	"org.opencontainers.image.revision",
}

// TestDockerfile checks what can be checked of the image without a Docker
// engine: every COPY source exists and is in the build context, the binary
// is static (distroless/static has no libc), the user is numeric and not
// root (so Kubernetes' runAsNonRoot can verify it), the OCI labels, and
// that the default command's configuration and policy are in the image.
func TestDockerfile(t *testing.T) {
	df, err := parseDockerfile(filepath.Join(repoRoot, "Dockerfile"))
	if err != nil {
		t.Fatal(err)
	}
	ignore, err := readDockerignore(repoRoot)
	if err != nil {
		t.Fatal(err)
	}
	buildStage, _, out, err := df.buildCommand()
	if err != nil {
		t.Fatal(err)
	}
	for _, st := range df.stages {
		ops, err := st.copies()
		if err != nil {
			t.Fatal(err)
		}
		for _, op := range ops {
			for _, src := range op.srcs {
				switch {
				case op.from == buildStage:
					if src != out {
						t.Errorf("COPY --from=%s %s: the build writes %s", op.from, src, out)
					}
				case op.from != "":
					t.Errorf("COPY --from=%s: unknown stage", op.from)
				default:
					rel := strings.TrimSuffix(src, "/")
					if rel == "." {
						continue
					}
					if _, err := os.Stat(filepath.Join(repoRoot, rel)); err != nil {
						t.Errorf("COPY %s: %v", src, err)
					}
					if ignore.excluded(rel) {
						t.Errorf("COPY %s: .dockerignore leaves it out of the build context", src)
					}
				}
			}
		}
	}
	for _, keep := range []string{"go.mod", "main.go", "policies/authz.rego", "deploy/docker/ctxgate.yaml"} {
		if ignore.excluded(keep) {
			t.Errorf(".dockerignore leaves out %s, which the build needs", keep)
		}
	}
	for _, drop := range []string{".git", "e2e/node/node_modules", ".tools"} {
		if !ignore.excluded(drop) {
			t.Errorf(".dockerignore keeps %s in the build context", drop)
		}
	}

	final := df.final()
	if !strings.HasPrefix(final.from, "gcr.io/distroless/static") {
		t.Errorf("final stage FROM %s: want distroless/static (no shell, no libc)", final.from)
	}
	checkStatic(t, ctxgateBin)
	users := final.all("USER")
	if len(users) == 0 {
		t.Fatal("the final stage has no USER: the image would run as root")
	}
	uid, gid, err := numericUser(users[len(users)-1])
	if err != nil || uid == 0 || gid == 0 {
		t.Errorf("USER %s: want a numeric non-root uid:gid (%v)", users[len(users)-1], err)
	}
	labels := strings.Join(final.all("LABEL"), " ")
	for _, l := range imageLabels {
		if !strings.Contains(labels, l+"=") {
			t.Errorf("LABEL %s is missing", l)
		}
	}
	if !slices.ContainsFunc(final.all("EXPOSE"), func(s string) bool { return slices.Contains(strings.Fields(s), "8080") }) {
		t.Error("EXPOSE 8080 is missing")
	}
	argv, err := imageCommand(final)
	if err != nil {
		t.Fatal(err)
	}
	layout, err := imageLayout(final)
	if err != nil {
		t.Fatal(err)
	}
	i := slices.Index(argv, "--config")
	if i < 0 || i+1 == len(argv) {
		t.Fatalf("the image's command %q names no --config", argv)
	}
	cfg, ok := layout[argv[i+1]]
	if !ok || cfg != "deploy/docker/ctxgate.yaml" {
		t.Errorf("the image's --config %s is not deploy/docker/ctxgate.yaml (COPY gives %q)", argv[i+1], cfg)
	}
	if layout["/etc/ctxgate/policies"] != "policies" {
		t.Errorf("policies/ is not copied to /etc/ctxgate/policies (the default configuration's policy.dir)")
	}
	if data, err := os.ReadFile(filepath.Join(repoRoot, "deploy/docker/ctxgate.yaml")); err != nil || !strings.Contains(string(data), "dir: /etc/ctxgate/policies\n") {
		t.Errorf("deploy/docker/ctxgate.yaml does not use policy.dir /etc/ctxgate/policies (%v)", err)
	}
}

func checkStatic(t *testing.T, bin string) {
	t.Helper()
	f, err := elf.Open(bin)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	for _, p := range f.Progs {
		if p.Type == elf.PT_INTERP {
			t.Errorf("%s is dynamically linked; distroless/static cannot run it", bin)
		}
	}
}

func numericUser(spec string) (uid, gid int, err error) {
	u, g, _ := strings.Cut(spec, ":")
	if uid, err = strconv.Atoi(u); err != nil {
		return 0, 0, err
	}
	if g == "" {
		return uid, uid, errors.New("no group: the group would be root's")
	}
	gid, err = strconv.Atoi(g)
	return uid, gid, err
}

// imageCommand is ENTRYPOINT followed by CMD, as the container runs it.
func imageCommand(st *stage) ([]string, error) {
	var argv []string
	for _, which := range []string{"ENTRYPOINT", "CMD"} {
		all := st.all(which)
		if len(all) == 0 {
			continue
		}
		v, err := execForm(all[len(all)-1])
		if err != nil {
			return nil, err
		}
		argv = append(argv, v...)
	}
	if len(argv) == 0 {
		return nil, errors.New("the final stage has no ENTRYPOINT or CMD")
	}
	return argv, nil
}

// imageLayout maps each path the final stage's COPYs create to its
// source: a context path, or "build:" and the built file.
func imageLayout(st *stage) (map[string]string, error) {
	ops, err := st.copies()
	if err != nil {
		return nil, err
	}
	layout := map[string]string{}
	for _, op := range ops {
		for _, src := range op.srcs {
			dst := op.dst
			if strings.HasSuffix(dst, "/") && !strings.HasSuffix(src, "/") {
				dst += filepath.Base(src)
			}
			if op.from != "" {
				src = "build:" + src
			}
			layout[strings.TrimSuffix(dst, "/")] = strings.TrimSuffix(src, "/")
		}
	}
	return layout, nil
}

// TestImageDefaultConfig runs `ctxgate check` on the image's default
// configuration: it starts with the upstream URL and the API key hash, and
// refuses, naming what is missing, anything less safe.
func TestImageDefaultConfig(t *testing.T) {
	path := filepath.Join(repoRoot, "deploy/docker/ctxgate.yaml")
	keyHash := sha256Hex("deploy-test-key")
	base := map[string]string{"CTXGATE_UPSTREAM_URL": "http://mcp.internal:3001/mcp", "CTXGATE_API_KEY_SHA256": keyHash}
	with := func(kv ...string) map[string]string {
		env := map[string]string{}
		for k, v := range base {
			env[k] = v
		}
		for i := 0; i+1 < len(kv); i += 2 {
			if kv[i+1] == "" {
				delete(env, kv[i])
			} else {
				env[kv[i]] = kv[i+1]
			}
		}
		return env
	}
	tests := []struct {
		name  string
		env   map[string]string
		valid bool
		want  string // in the refusal
	}{
		{name: "upstream and key", env: base, valid: true},
		{name: "admin beyond loopback with a token", env: with("CTXGATE_ADMIN_LISTEN", "0.0.0.0:9090", "CTXGATE_ADMIN_TOKEN_SHA256", sha256Hex("admin")), valid: true},
		{name: "session key", env: with("CTXGATE_SESSION_KEY", strings.Repeat("k", 32)), valid: true},
		{name: "no upstream URL", env: with("CTXGATE_UPSTREAM_URL", ""), want: "CTXGATE_UPSTREAM_URL is not set"},
		{name: "no API key: no anonymous default", env: with("CTXGATE_API_KEY_SHA256", ""), want: "CTXGATE_API_KEY_SHA256 is not set"},
		{name: "a key instead of its hash", env: with("CTXGATE_API_KEY_SHA256", "deploy-test-key"), want: "auth.api_keys[0].sha256"},
		{name: "admin beyond loopback without a token", env: with("CTXGATE_ADMIN_LISTEN", "0.0.0.0:9090"), want: "admin.token_sha256"},
		{name: "short session key", env: with("CTXGATE_SESSION_KEY", "short"), want: "sessions.keys[0]"},
		{name: "public URL without a scheme", env: with("CTXGATE_PUBLIC_URL", "mcp.example.com"), want: "server.public_url"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg, err := os.ReadFile(path)
			if err != nil {
				t.Fatal(err)
			}
			local := withStandIns(t, cfg, filepath.Join(repoRoot, "policies"))
			out, err := runCtxgate(t, tt.env, "check", "--config", local)
			if tt.valid {
				if err != nil {
					t.Fatalf("ctxgate check: %v\n%s", err, out)
				}
				return
			}
			if err == nil || !strings.Contains(out, tt.want) {
				t.Fatalf("ctxgate check: %v, want a refusal naming %q:\n%s", err, tt.want, out)
			}
		})
	}
}

func sha256Hex(s string) string {
	sum := sha256.Sum256([]byte(s))
	return hex.EncodeToString(sum[:])
}

// TestImageRunsAsNonRoot builds the image's filesystem from the final
// stage's COPYs (the built binary, the policies, the default
// configuration), read-only, and runs the image's command in it (chroot)
// as the image's USER, in front of a real MCP server: it must start, serve
// an authenticated client, refuse an anonymous one, drain on SIGTERM, and
// leave the filesystem as it found it.
func TestImageRunsAsNonRoot(t *testing.T) {
	if os.Geteuid() != 0 {
		need(t, "root (to chroot into the image layout and switch to its user)", "run the tests as root, as CI does", errors.New("not root"))
	}
	df, err := parseDockerfile(filepath.Join(repoRoot, "Dockerfile"))
	if err != nil {
		t.Fatal(err)
	}
	final := df.final()
	users := final.all("USER")
	if len(users) == 0 {
		t.Fatal("no USER")
	}
	uid, gid, err := numericUser(users[len(users)-1])
	if err != nil {
		t.Fatal(err)
	}
	argv, err := imageCommand(final)
	if err != nil {
		t.Fatal(err)
	}
	layout, err := imageLayout(final)
	if err != nil {
		t.Fatal(err)
	}
	rootfs := filepath.Join(t.TempDir(), "rootfs")
	if err := buildRootfs(rootfs, layout); err != nil {
		t.Fatal(err)
	}
	before, err := snapshot(rootfs)
	if err != nil {
		t.Fatal(err)
	}

	project, err := upstreamtest.NewProject(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	// Cleanups, not defers: they run after the gateway's (registered
	// later) has stopped it, so no gateway connection holds Close up.
	t.Cleanup(func() { project.Close() })
	upstream := httptest.NewServer(project.Handler())
	t.Cleanup(upstream.Close)

	const key = "deploy-test-key"
	cmd := exec.Command(argv[0], argv[1:]...)
	cmd.Dir = "/"
	cmd.Env = []string{
		"CTXGATE_UPSTREAM_URL=" + upstream.URL + "/",
		"CTXGATE_API_KEY_SHA256=" + sha256Hex(key),
		// Port 0 rather than the defaults (0.0.0.0:8080, 127.0.0.1:9090):
		// tests never take fixed ports.
		"CTXGATE_LISTEN=127.0.0.1:0",
		"CTXGATE_ADMIN_LISTEN=127.0.0.1:0",
	}
	cmd.SysProcAttr = &syscall.SysProcAttr{
		Chroot:     rootfs,
		Credential: &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid), Groups: []uint32{}},
	}
	g := startGateway(t, cmd)

	status, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", cmd.Process.Pid))
	if err != nil {
		t.Fatal(err)
	}
	ids := regexp.MustCompile(fmt.Sprintf(`(?m)^Uid:\s+%[1]d\s+%[1]d\s+%[1]d\s+%[1]d\s*\nGid:\s+%[2]d\s+%[2]d\s+%[2]d\s+%[2]d\s*$`, uid, gid))
	if !ids.Match(status) || !regexp.MustCompile(`(?m)^Groups:\s*$`).Match(status) {
		t.Errorf("the gateway does not run as %d with no supplementary groups:\n%s", uid, status)
	}

	// The default public_url, http://localhost:8080: the Host clients of
	// `docker run -p 8080:8080` send.
	url := "http://" + g.public + "/mcp/default"
	resp, body := mcpPost(t, url, "localhost:8080", map[string]string{"Authorization": "Bearer " + key}, initializeBody)
	if resp.StatusCode != http.StatusOK || resp.Header.Get("Mcp-Session-Id") == "" || !strings.Contains(body, "ctxgate-sample-project") {
		t.Errorf("initialize with the API key: %d %q\n%s", resp.StatusCode, resp.Header.Get("Mcp-Session-Id"), body)
	}
	if resp, _ := mcpPost(t, url, "localhost:8080", nil, initializeBody); resp.StatusCode != http.StatusUnauthorized {
		t.Errorf("initialize without credentials: %d, want 401", resp.StatusCode)
	}
	if resp, _ := mcpPost(t, url, "evil.example", map[string]string{"Authorization": "Bearer " + key}, initializeBody); resp.StatusCode == http.StatusOK {
		t.Error("a request naming another Host was served (DNS rebinding defence)")
	}

	if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	<-g.done
	if g.waitErr != nil {
		t.Errorf("after SIGTERM: %v, want a clean exit", g.waitErr)
	}
	after, err := snapshot(rootfs)
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(before, after) {
		t.Errorf("the gateway changed the image's filesystem:\nbefore %q\nafter  %q", before, after)
	}
}

// buildRootfs lays out the image's files under root: directories and
// files owned by root and not writable by anyone, like a read-only root
// filesystem (docker run --read-only).
func buildRootfs(root string, layout map[string]string) error {
	for dst, src := range layout {
		target := filepath.Join(root, dst)
		from := filepath.Join(repoRoot, src)
		if strings.HasPrefix(src, "build:") {
			from = ctxgateBin // the build stage's output: TestMain built it the same way
		}
		if err := copyTree(from, target); err != nil {
			return err
		}
	}
	return filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		info, err := d.Info()
		if err != nil {
			return err
		}
		return os.Chmod(p, info.Mode().Perm()&^0o222)
	})
}

func copyTree(from, to string) error {
	return filepath.WalkDir(from, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(from, p)
		target := filepath.Join(to, rel)
		if d.IsDir() {
			return os.MkdirAll(target, 0o755)
		}
		if err := os.MkdirAll(filepath.Dir(target), 0o755); err != nil {
			return err
		}
		data, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		info, err := d.Info()
		if err != nil {
			return err
		}
		return os.WriteFile(target, data, info.Mode().Perm())
	})
}

// snapshot lists every path under root with its mode, size and
// modification time.
func snapshot(root string) ([]string, error) {
	var out []string
	err := filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		info, err := d.Info()
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(root, p)
		out = append(out, fmt.Sprintf("%s %v %d %d", rel, info.Mode(), info.Size(), info.ModTime().UnixNano()))
		return nil
	})
	return out, err
}
