package hostrun

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"runtime"
	"strings"
	"sync"

	"github.com/openaml/terraform-provider-aml/internal/engine/drivers"
	"github.com/openaml/terraform-provider-aml/internal/engine/drivers/hostrun/supervise"
	"github.com/openaml/terraform-provider-aml/internal/engine/env"
)

// ProbeHost describes this machine: OS, cores, memory, GPUs, python3.
func ProbeHost(ctx context.Context) drivers.Facts {
	return probe(ctx, false)
}

// ProbeAttached is ProbeHost plus what an attach needs to know of a machine
// reached through an agent: every Python on PATH, Docker, home and PATH.
func ProbeAttached(ctx context.Context) drivers.Facts {
	return probe(ctx, true)
}

// probe runs the programs it asks (python3, nvidia-smi, every Python on PATH,
// docker) at the same time: each mostly waits for its process.
func probe(ctx context.Context, attached bool) drivers.Facts {
	host, _ := os.Hostname()
	f := drivers.Facts{Hostname: host, OS: runtime.GOOS, Arch: runtime.GOARCH, Cores: runtime.NumCPU()}
	if b, err := os.ReadFile("/proc/meminfo"); err == nil {
		var kb int64
		if _, err := fmt.Sscanf(string(b), "MemTotal: %d kB", &kb); err == nil {
			f.MemoryBytes = kb * 1024
		}
	}
	var wg sync.WaitGroup
	wg.Go(func() {
		if out, err := exec.CommandContext(ctx, "python3", "--version").Output(); err == nil {
			f.Python = strings.TrimSpace(strings.TrimPrefix(string(out), "Python "))
		}
	})
	wg.Go(func() { f.GPUs = supervise.CountGPUs(ctx) })
	if attached {
		wg.Go(func() {
			for _, in := range env.DiscoverInterpreters(ctx, os.Getenv("PATH")) {
				f.PythonVersions = append(f.PythonVersions, in.Version)
			}
		})
		wg.Go(func() {
			if info, err := env.ProbeDocker(ctx, os.Getenv("PATH")); err == nil {
				f.Docker, f.DockerVersion = true, info.ServerVersion
			} else {
				f.DockerProblem = err.Error()
			}
		})
		f.Home, _ = os.UserHomeDir()
		f.PathEnv = os.Getenv("PATH")
	}
	wg.Wait()
	return f
}
