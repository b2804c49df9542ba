// Package agent dispatches the provider binary's `agent` subcommands: the detached
// helpers the engine starts (the run supervisor, pool node agents) and the host
// commands that drivers of attached machines run there.
package agent

import (
	"fmt"
	"os"
	"strconv"
	"strings"

	"github.com/openaml/terraform-provider-aml/internal/engine/drivers/hostrun"
	"github.com/openaml/terraform-provider-aml/internal/engine/drivers/hostrun/hostagent"
	"github.com/openaml/terraform-provider-aml/internal/engine/drivers/pool"
)

// Main runs `agent <subcommand> ...` and returns the exit code.
func Main(args []string) int {
	if len(args) == 0 {
		fmt.Fprintf(os.Stderr, "usage: terraform-provider-aml agent {supervise|supervise-rank|node|%s} ...\n", strings.Join(hostagent.Commands, "|"))
		return 2
	}
	switch args[0] {
	case "node":
		if len(args) != 4 {
			fmt.Fprintln(os.Stderr, "usage: terraform-provider-aml agent node <workspace-dir> <pool> <node-id>")
			return 2
		}
		return pool.RunNode(args[1], args[2], args[3])
	case "supervise":
		if len(args) != 2 {
			fmt.Fprintln(os.Stderr, "usage: terraform-provider-aml agent supervise <run-dir>")
			return 2
		}
		return hostrun.Supervise(args[1])
	case "container":
		if len(args) != 2 {
			fmt.Fprintln(os.Stderr, "usage: terraform-provider-aml agent container <run-dir> (started by the supervisor)")
			return 2
		}
		return hostrun.KeepContainer(args[1])
	case "supervise-rank":
		if len(args) != 2 {
			fmt.Fprintln(os.Stderr, "usage: terraform-provider-aml agent supervise-rank <run-dir> (under srun)")
			return 2
		}
		return hostrun.SuperviseRank(args[1])
	case "rank-epilog":
		if len(args) != 2 {
			fmt.Fprintln(os.Stderr, "usage: terraform-provider-aml agent rank-epilog <run-dir> (srun --task-epilog)")
			return 2
		}
		rank, _ := strconv.Atoi(os.Getenv("SLURM_PROCID"))
		if err := hostrun.EndRank(args[1], rank); err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 1
		}
		return 0
	default:
		// Host commands: what drivers of attached machines run there over SSH.
		return hostagent.Main(args, os.Stdin, os.Stdout, os.Stderr)
	}
}

// MaybeRun runs the agent and exits when os.Args asks for it. Test binaries call
// it from TestMain, since the engine starts agents by re-executing itself.
func MaybeRun() {
	if len(os.Args) > 1 && os.Args[1] == "agent" {
		os.Exit(Main(os.Args[2:]))
	}
}
