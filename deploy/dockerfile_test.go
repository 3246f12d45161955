package deploy

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
)

// dockerfile is the part of a Dockerfile these tests read: its stages and
// their instructions, continuation lines joined and comments dropped.
type dockerfile struct {
	stages []stage
}

type stage struct {
	from, name   string
	instructions []instruction
}

type instruction struct {
	cmd  string // upper case: RUN, COPY, ...
	args string
}

func parseDockerfile(path string) (*dockerfile, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	df := &dockerfile{}
	var line strings.Builder
	for _, raw := range strings.Split(string(data), "\n") {
		trimmed := strings.TrimSpace(raw)
		if line.Len() == 0 && (trimmed == "" || strings.HasPrefix(trimmed, "#")) {
			continue
		}
		if strings.HasSuffix(trimmed, `\`) {
			line.WriteString(strings.TrimSuffix(trimmed, `\`) + " ")
			continue
		}
		line.WriteString(trimmed)
		cmd, args, _ := strings.Cut(line.String(), " ")
		line.Reset()
		in := instruction{cmd: strings.ToUpper(cmd), args: strings.TrimSpace(args)}
		if in.cmd == "FROM" {
			f := strings.Fields(in.args)
			st := stage{from: f[0]}
			if len(f) == 3 && strings.EqualFold(f[1], "AS") {
				st.name = f[2]
			}
			df.stages = append(df.stages, st)
			continue
		}
		if len(df.stages) == 0 {
			return nil, fmt.Errorf("%s: %s before the first FROM", path, in.cmd)
		}
		st := &df.stages[len(df.stages)-1]
		st.instructions = append(st.instructions, in)
	}
	if len(df.stages) == 0 {
		return nil, fmt.Errorf("%s: no FROM", path)
	}
	return df, nil
}

// final is the stage the image is made of.
func (df *dockerfile) final() *stage { return &df.stages[len(df.stages)-1] }

func (df *dockerfile) stage(name string) *stage {
	for i := range df.stages {
		if df.stages[i].name == name {
			return &df.stages[i]
		}
	}
	return nil
}

func (st *stage) all(cmd string) []string {
	var out []string
	for _, in := range st.instructions {
		if in.cmd == cmd {
			out = append(out, in.args)
		}
	}
	return out
}

// argDefaults are the stage's ARG NAME=default values.
func (st *stage) argDefaults() map[string]string {
	args := map[string]string{}
	for _, a := range st.all("ARG") {
		if k, v, ok := strings.Cut(a, "="); ok {
			args[k] = v
		}
	}
	return args
}

var buildRun = regexp.MustCompile(`^CGO_ENABLED=0 go build .* -o (\S+) \.$`)

// buildCommand is the go build of the stage that builds the binary, and the
// path it writes.
func (df *dockerfile) buildCommand() (stageName, command, out string, err error) {
	for _, st := range df.stages[:len(df.stages)-1] {
		for _, run := range st.all("RUN") {
			if m := buildRun.FindStringSubmatch(run); m != nil {
				return st.name, run, m[1], nil
			}
		}
	}
	return "", "", "", errors.New("Dockerfile: no `RUN CGO_ENABLED=0 go build ... -o OUT .` in a build stage")
}

// runBuild runs the Dockerfile's go build in the build context, with the
// stage's ARG defaults expanded, writing the binary to out instead.
func (df *dockerfile) runBuild(context, out string) error {
	name, command, dst, err := df.buildCommand()
	if err != nil {
		return err
	}
	args := df.stage(name).argDefaults()
	args["VERSION"] = "deploy-test"
	command = os.Expand(strings.Replace(command, "-o "+dst, "-o "+out, 1), func(k string) string { return args[k] })
	cmd := exec.Command("sh", "-c", command)
	cmd.Dir = context
	if b, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("%s: %w\n%s", command, err, b)
	}
	return nil
}

// copyOp is one COPY of the final stage.
type copyOp struct {
	from      string // --from stage, "" for the build context
	srcs      []string
	dst       string
	chownFlag string
}

func (st *stage) copies() ([]copyOp, error) {
	var ops []copyOp
	for _, a := range st.all("COPY") {
		f := strings.Fields(a)
		var op copyOp
		for len(f) > 0 && strings.HasPrefix(f[0], "--") {
			k, v, _ := strings.Cut(strings.TrimPrefix(f[0], "--"), "=")
			switch k {
			case "from":
				op.from = v
			case "chown", "chmod":
				op.chownFlag = f[0]
			default:
				return nil, fmt.Errorf("COPY %s: flag %s is not understood by this test", a, f[0])
			}
			f = f[1:]
		}
		if len(f) < 2 {
			return nil, fmt.Errorf("COPY %s: needs a source and a destination", a)
		}
		op.srcs, op.dst = f[:len(f)-1], f[len(f)-1]
		ops = append(ops, op)
	}
	return ops, nil
}

// execForm decodes a JSON-array ENTRYPOINT or CMD.
func execForm(args string) ([]string, error) {
	var v []string
	if err := json.Unmarshal([]byte(args), &v); err != nil {
		return nil, fmt.Errorf("%s: not the exec (JSON array) form: %w", args, err)
	}
	return v, nil
}

// dockerignore is the build context's .dockerignore: patterns matched
// against context-relative paths, later patterns (and ! exceptions)
// overriding earlier ones, as Docker does. "**" is not used here and not
// supported.
type dockerignore []string

func readDockerignore(context string) (dockerignore, error) {
	data, err := os.ReadFile(filepath.Join(context, ".dockerignore"))
	if err != nil {
		return nil, err
	}
	var d dockerignore
	for _, l := range strings.Split(string(data), "\n") {
		l = strings.TrimSpace(l)
		if l == "" || strings.HasPrefix(l, "#") {
			continue
		}
		if strings.Contains(l, "**") {
			return nil, fmt.Errorf(".dockerignore: %q: ** is not supported by this test", l)
		}
		d = append(d, l)
	}
	return d, nil
}

// excluded reports whether path (context-relative, slash-separated) or a
// directory above it is left out of the build context.
func (d dockerignore) excluded(path string) bool {
	out := false
	for _, p := range d {
		neg := strings.HasPrefix(p, "!")
		p = strings.TrimPrefix(strings.TrimPrefix(p, "!"), "/")
		p = strings.TrimSuffix(p, "/")
		for q := path; q != "." && q != "/" && q != ""; q = filepath.Dir(q) {
			if ok, _ := filepath.Match(p, q); ok {
				out = !neg
				break
			}
		}
	}
	return out
}
