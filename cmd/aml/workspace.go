package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"time"

	"github.com/openaml/terraform-provider-aml/internal/engine"
)

// globals are the flags every command takes.
type globals struct {
	workspace string
	chdir     string
	backend   string
	json      bool
}

func (g *globals) register(fs *flag.FlagSet) {
	fs.StringVar(&g.workspace, "workspace", "", "workspace directory, id or name")
	fs.StringVar(&g.workspace, "w", "", "shorthand for --workspace")
	fs.StringVar(&g.chdir, "chdir", "", "Terraform working directory (default: .)")
	fs.StringVar(&g.chdir, "C", "", "shorthand for --chdir")
	fs.StringVar(&g.backend, "backend", "", "shared backend URL")
	fs.BoolVar(&g.json, "json", false, "machine-readable output")
}

// parse parses flags anywhere among the arguments (flag stops at the first
// positional one) and returns the positional ones.
func parse(fs *flag.FlagSet, args []string) ([]string, error) {
	fs.SetOutput(io.Discard)
	var pos []string
	for {
		if err := fs.Parse(args); err != nil {
			if errors.Is(err, flag.ErrHelp) {
				return nil, usageErr("%s: flags: %s", fs.Name(), flagList(fs))
			}
			return nil, usageErr("%s: %v", fs.Name(), err)
		}
		args = fs.Args()
		if len(args) == 0 {
			return pos, nil
		}
		pos = append(pos, args[0])
		args = args[1:]
	}
}

func flagList(fs *flag.FlagSet) string {
	var names []string
	fs.VisitAll(func(f *flag.Flag) { names = append(names, "--"+f.Name) })
	return strings.Join(names, " ")
}

// workspaceFinder opens the engine and finds the workspace the flags name.
type found struct {
	eng *engine.Engine
	ws  *engine.Workspace
	// how says how the workspace was found, for `aml workspace`.
	how string
}

func (f *found) Close() { f.eng.Close() }

func notFound(format string, args ...any) error {
	return &codeError{code: exitNotFound, err: fmt.Errorf(format, args...)}
}

func openWorkspace(ctx context.Context, g *globals) (*found, error) {
	if g.backend == "" {
		g.backend = os.Getenv("AML_BACKEND")
	}
	dir := g.chdir
	if dir == "" {
		dir = "."
	}
	dir, err := filepath.Abs(dir)
	if err != nil {
		return nil, err
	}
	if st, err := os.Stat(dir); err != nil || !st.IsDir() {
		return nil, usageErr("--chdir %s: not a directory", dir)
	}
	self, err := os.Executable()
	if err != nil {
		return nil, err
	}
	opts := engine.Options{WorkDir: dir, AgentCommand: []string{self, "agent"}}
	if g.backend != "" {
		opts.Shared = sharedFromEnv(g.backend)
	}
	eng, err := engine.New(opts)
	if err != nil {
		return nil, err
	}
	var ws *engine.Workspace
	var how string
	if g.backend != "" {
		ws, how, err = locateShared(ctx, eng, dir, g)
	} else {
		ws, how, err = locate(ctx, eng, dir, g)
	}
	if err != nil {
		eng.Close()
		if engine.IsNotFound(err) {
			return nil, notFound("%v", err)
		}
		return nil, err
	}
	return &found{eng: eng, ws: ws, how: how}, nil
}

func locate(ctx context.Context, eng *engine.Engine, dir string, g *globals) (*engine.Workspace, string, error) {
	ref := g.workspace
	if ref == "" {
		ref = os.Getenv("AML_WORKSPACE")
	}
	if ref != "" {
		p := ref
		if !filepath.IsAbs(p) {
			p = filepath.Join(dir, p)
		}
		if st, err := os.Stat(p); err == nil && st.IsDir() {
			ws, err := eng.ReadWorkspace(ctx, p)
			return ws, "directory " + p, err
		}
		ws, err := eng.ReadWorkspace(ctx, ref)
		return ws, "id or name " + ref, err
	}
	ws, how, err := fromTerraform(ctx, eng, dir)
	if ws != nil || err != nil {
		return ws, how, err
	}
	note := how // why the state did not say, if it was read
	root := filepath.Join(dir, engine.DefaultWorkspaceRoot)
	entries, _ := os.ReadDir(root)
	var dirs []string
	for _, de := range entries {
		if de.IsDir() && !strings.HasPrefix(de.Name(), ".") {
			dirs = append(dirs, de.Name())
		}
	}
	switch len(dirs) {
	case 0:
		return nil, "", fmt.Errorf("no workspace found: %s has no Terraform state with an aml_workspace%s and no %s; pass --workspace DIR|UUID or --chdir to a Terraform directory: %w",
			dir, note, engine.DefaultWorkspaceRoot, engine.ErrNotFound)
	case 1:
		p := filepath.Join(root, dirs[0])
		ws, err := eng.ReadWorkspace(ctx, p)
		return ws, "the one workspace under " + root + note, err
	}
	return nil, "", usageErr("%d workspaces under %s (%s): pass --workspace NAME", len(dirs), root, strings.Join(dirs, ", "))
}

// terraformBin is the terraform (or OpenTofu) to read state with.
func terraformBin() string {
	for _, v := range []string{os.Getenv("AML_TERRAFORM"), os.Getenv("TF_ACC_TERRAFORM_PATH")} {
		if v != "" {
			return v
		}
	}
	for _, n := range []string{"terraform", "tofu"} {
		if p, err := exec.LookPath(n); err == nil {
			return p
		}
	}
	return ""
}

// maxStateJSON bounds what `terraform show -json` may print.
const maxStateJSON = 256 << 20

type tfWorkspace struct {
	Address     string
	ID          string
	Name        string
	StoragePath string
}

// fromTerraform reads the aml_workspace resources of dir's state. No
// configuration, no terraform, no state or no such resource: nothing (the
// caller looks under .aml/).
func fromTerraform(ctx context.Context, eng *engine.Engine, dir string) (*engine.Workspace, string, error) {
	tfs, _ := filepath.Glob(filepath.Join(dir, "*.tf"))
	tfjson, _ := filepath.Glob(filepath.Join(dir, "*.tf.json"))
	bin := terraformBin()
	if len(tfs)+len(tfjson) == 0 || bin == "" {
		return nil, "", nil
	}
	wss, err := terraformWorkspaces(ctx, bin, dir)
	if err != nil {
		return nil, " (" + firstLine(err.Error()) + ")", nil
	}
	if len(wss) == 0 {
		return nil, "", nil
	}
	if len(wss) > 1 {
		var names []string
		for _, w := range wss {
			names = append(names, w.Address+" ("+w.Name+")")
		}
		return nil, "", usageErr("the state of %s has %d workspaces: %s; pass --workspace NAME or UUID", dir, len(wss), strings.Join(names, ", "))
	}
	w := wss[0]
	ws, err := eng.LocateWorkspace(ctx, w.ID, w.Name, w.StoragePath)
	if err != nil {
		return nil, "", fmt.Errorf("%s in the state of %s: %w", w.Address, dir, err)
	}
	return ws, w.Address + " in the Terraform state of " + dir, nil
}

func terraformWorkspaces(ctx context.Context, bin, dir string) ([]tfWorkspace, error) {
	ctx, cancel := context.WithTimeout(ctx, 60*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin, "show", "-json", "-no-color")
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), "TF_IN_AUTOMATION=1", "CHECKPOINT_DISABLE=1")
	var stderr bytes.Buffer
	cmd.Stderr = &limitedBuffer{b: &stderr, n: 64 << 10}
	out, err := cmd.StdoutPipe()
	if err != nil {
		return nil, err
	}
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	b, rerr := io.ReadAll(io.LimitReader(out, maxStateJSON+1))
	werr := cmd.Wait()
	if rerr != nil || werr != nil {
		msg := strings.Join(strings.Fields(stderr.String()), " ")
		return nil, fmt.Errorf("terraform show -json failed: %v: %s", errors.Join(rerr, werr), msg)
	}
	if len(b) > maxStateJSON {
		return nil, fmt.Errorf("terraform show -json printed more than %d bytes", maxStateJSON)
	}
	return parseStateWorkspaces(b)
}

type tfModule struct {
	Resources []struct {
		Address string         `json:"address"`
		Mode    string         `json:"mode"`
		Type    string         `json:"type"`
		Values  map[string]any `json:"values"`
	} `json:"resources"`
	ChildModules []tfModule `json:"child_modules"`
}

// parseStateWorkspaces finds the aml_workspace resources (any module) of
// `terraform show -json` output.
func parseStateWorkspaces(b []byte) ([]tfWorkspace, error) {
	var st struct {
		Values *struct {
			RootModule tfModule `json:"root_module"`
		} `json:"values"`
	}
	if err := json.Unmarshal(b, &st); err != nil {
		return nil, fmt.Errorf("terraform show -json: %w", err)
	}
	if st.Values == nil {
		return nil, nil
	}
	var out []tfWorkspace
	var walk func(m tfModule)
	walk = func(m tfModule) {
		for _, r := range m.Resources {
			if r.Type != "aml_workspace" || r.Mode != "managed" {
				continue
			}
			s := func(k string) string { v, _ := r.Values[k].(string); return v }
			if s("id") != "" {
				out = append(out, tfWorkspace{Address: r.Address, ID: s("id"), Name: s("name"), StoragePath: s("storage_path")})
			}
		}
		for _, c := range m.ChildModules {
			walk(c)
		}
	}
	walk(st.Values.RootModule)
	sort.Slice(out, func(i, j int) bool { return out[i].Address < out[j].Address })
	return out, nil
}

func firstLine(s string) string {
	s = strings.TrimSpace(s)
	if i := strings.IndexByte(s, '\n'); i >= 0 {
		s = s[:i]
	}
	return cut(s, 300)
}

type limitedBuffer struct {
	b *bytes.Buffer
	n int
}

func (l *limitedBuffer) Write(p []byte) (int, error) {
	if room := l.n - l.b.Len(); room > 0 {
		l.b.Write(p[:min(len(p), room)])
	}
	return len(p), nil
}

// runID resolves a RUN argument: a full id, a run id, or a unique prefix of one.
func (f *found) runID(ctx context.Context, arg string) (string, error) {
	if strings.Contains(arg, "/runs/") {
		return arg, nil
	}
	runs, err := f.eng.ListRuns(ctx, f.ws.ID, engine.RunQuery{})
	if err != nil {
		return "", err
	}
	var match []string
	for _, r := range runs {
		if r.RunID == arg {
			return r.ID, nil
		}
		if strings.HasPrefix(r.RunID, arg) {
			match = append(match, r.RunID)
		}
	}
	switch len(match) {
	case 0:
		return "", notFound("no run %q in workspace %s (%s)", arg, f.ws.Name, f.ws.ID)
	case 1:
		return f.ws.ID + "/runs/" + match[0], nil
	}
	if len(match) > 5 {
		match = append(match[:5], "...")
	}
	return "", usageErr("%q matches %d runs: %s", arg, len(match), strings.Join(match, ", "))
}

// sharedFromEnv is the shared backend at a PostgreSQL connection string, with
// its bucket and the rest from the environment as the provider's
// shared_backend block takes them: AML_S3_BUCKET, AML_S3_PREFIX,
// AML_S3_ENDPOINT, AML_SECRETS_KEY, AML_CACHE_DIR; PG* and AWS_* as usual.
func sharedFromEnv(postgres string) *engine.SharedBackend {
	b := &engine.SharedBackend{Postgres: postgres, SecretsKey: os.Getenv("AML_SECRETS_KEY"), CacheDir: os.Getenv("AML_CACHE_DIR")}
	b.S3.Bucket = os.Getenv("AML_S3_BUCKET")
	b.S3.Prefix = os.Getenv("AML_S3_PREFIX")
	b.S3.Endpoint = os.Getenv("AML_S3_ENDPOINT")
	return b
}

// locateShared finds a workspace of the shared backend: by -w NAME or UUID,
// else the aml_workspace in the Terraform state of dir.
func locateShared(ctx context.Context, eng *engine.Engine, dir string, g *globals) (*engine.Workspace, string, error) {
	ref := g.workspace
	if ref == "" {
		ref = os.Getenv("AML_WORKSPACE")
	}
	if ref == "" {
		if bin := terraformBin(); bin != "" {
			wss, err := terraformWorkspaces(ctx, bin, dir)
			if err == nil && len(wss) == 1 {
				ref = wss[0].Name
			}
		}
	}
	switch {
	case ref == "":
		return nil, "", usageErr("--backend: pass --workspace NAME or UUID (or run in a Terraform directory whose state has one aml_workspace)")
	case engine.IsWorkspaceID(ref):
		ws, err := eng.ReadWorkspace(ctx, ref)
		return ws, "id " + ref + " in the shared backend", err
	default:
		ws, err := eng.LocateSharedWorkspace(ctx, "", ref)
		return ws, "name " + ref + " in the shared backend", err
	}
}
