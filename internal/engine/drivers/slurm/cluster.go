package slurm

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"

	"github.com/openaml/terraform-provider-aml/internal/engine/drivers"
	"github.com/openaml/terraform-provider-aml/internal/engine/drivers/hostrun"
	"github.com/openaml/terraform-provider-aml/internal/engine/drivers/hostrun/supervise"
	"github.com/openaml/terraform-provider-aml/internal/engine/drivers/sshhost"
	"github.com/openaml/terraform-provider-aml/internal/engine/snapshot"
)

// cluster is where Slurm commands run and run directories are staged: this
// machine, or a login node over SSH. sharedRoot is seen by every node.
type cluster interface {
	// run runs a shell command on the submit host; a host out of reach is
	// drivers.ErrUnreachable.
	run(ctx context.Context, cmd string) ([]byte, error)
	// stage materializes a run directory under sharedRoot/runs.
	stage(ctx context.Context, spec drivers.RunSpec) (string, error)
	// agent is the provider binary's path as the nodes see it.
	agent(ctx context.Context) (string, error)
	writeFile(ctx context.Context, path string, b []byte) error
	ranks(ctx context.Context, runDir string, n int) ([]drivers.State, error)
	// results is the run directory's log and results, on this machine.
	results(runID, runDir string) (drivers.Execution, error)
	key() string
}

// localCluster submits from the machine running Terraform.
type localCluster struct {
	root          string
	blobs         snapshot.BlobStore
	agentPath     string
	envCacheBytes int64
}

func (c *localCluster) key() string { return "localhost" }

func (c *localCluster) run(ctx context.Context, cmd string) ([]byte, error) {
	ctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
	defer cancel()
	var out, errb bytes.Buffer
	x := exec.CommandContext(ctx, "sh", "-c", cmd)
	x.Stdout, x.Stderr = &out, &errb
	if err := x.Run(); err != nil {
		return out.Bytes(), fmt.Errorf("%s: %v: %s", cmd, err, strings.TrimSpace(errb.String()))
	}
	return out.Bytes(), nil
}

func (c *localCluster) stage(ctx context.Context, spec drivers.RunSpec) (string, error) {
	req := hostrun.NewStageRequest(spec, filepath.Join(c.root, "runs", spec.RunID))
	req.BlobsRoot = c.blobs.Root
	req.EnvRoot, req.EnvCacheBytes = filepath.Join(c.root, "envs"), c.envCacheBytes
	if err := os.MkdirAll(filepath.Dir(req.RunDir), 0o755); err != nil {
		return "", err
	}
	return req.RunDir, hostrun.Stage(ctx, req)
}

// agent copies the provider binary under sharedRoot/bin, content-addressed,
// so that every node runs the same one.
func (c *localCluster) agent(ctx context.Context) (string, error) {
	f, err := os.Open(c.agentPath)
	if err != nil {
		return "", err
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		return "", err
	}
	dst := filepath.Join(c.root, "bin", hex.EncodeToString(h.Sum(nil))[:16], "terraform-provider-aml")
	if st, err := os.Stat(dst); err == nil && st.Mode()&0o111 != 0 {
		return dst, nil
	}
	if err := os.MkdirAll(filepath.Dir(dst), 0o755); err != nil {
		return "", err
	}
	if _, err := f.Seek(0, io.SeekStart); err != nil {
		return "", err
	}
	tmp, err := os.CreateTemp(filepath.Dir(dst), ".agent-*")
	if err != nil {
		return "", err
	}
	defer os.Remove(tmp.Name())
	if _, err := io.Copy(tmp, f); err != nil {
		tmp.Close()
		return "", err
	}
	if err := tmp.Chmod(0o755); err != nil {
		tmp.Close()
		return "", err
	}
	if err := tmp.Close(); err != nil {
		return "", err
	}
	return dst, os.Rename(tmp.Name(), dst)
}

func (c *localCluster) writeFile(ctx context.Context, path string, b []byte) error {
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, b, 0o755); err != nil {
		return err
	}
	return os.Rename(tmp, path)
}

func (c *localCluster) ranks(ctx context.Context, runDir string, n int) ([]drivers.State, error) {
	return supervise.RankStates(runDir, n)
}

func (c *localCluster) results(runID, runDir string) (drivers.Execution, error) {
	return hostrun.Open(runDir), nil
}

// sshCluster submits from a login node reached over SSH; the agent there has
// sharedRoot as its root.
type sshCluster struct{ host *sshhost.Driver }

func (c *sshCluster) key() string { return c.host.Endpoint.Key() }

func (c *sshCluster) run(ctx context.Context, cmd string) ([]byte, error) {
	return c.host.Output(ctx, cmd)
}

func (c *sshCluster) stage(ctx context.Context, spec drivers.RunSpec) (string, error) {
	return c.host.Stage(ctx, spec)
}

func (c *sshCluster) agent(ctx context.Context) (string, error) { return c.host.AgentPathOnHost() }

func (c *sshCluster) writeFile(ctx context.Context, path string, b []byte) error {
	return c.host.Call(ctx, b, nil, "write-file", path, "755")
}

func (c *sshCluster) ranks(ctx context.Context, runDir string, n int) ([]drivers.State, error) {
	var out []drivers.State
	err := c.host.Call(ctx, nil, &out, "ranks", runDir, fmt.Sprint(n))
	return out, err
}

func (c *sshCluster) results(runID, runDir string) (drivers.Execution, error) {
	return c.host.Recover(context.Background(), sshhost.HandleFor(c.host, runID, runDir))
}
