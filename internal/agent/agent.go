// Package agent dispatches the provider binary's `agent` subcommands: the detached
// helpers the engine starts (the run supervisor, pool node agents) and the host
// commands that drivers of attached machines run there.
package agent

import (
	"fmt"
	"os"
	"strings"

	"github.com/openaml/terraform-provider-aml/internal/engine/drivers/hostrun/hostagent"
	"github.com/openaml/terraform-provider-aml/internal/engine/drivers/hostrun/supervise"
	"github.com/openaml/terraform-provider-aml/internal/engine/drivers/pool"
)

// Main runs `agent <subcommand> ...` and returns the exit code.
func Main(args []string) int {
	if len(args) == 0 {
		fmt.Fprintf(os.Stderr, "usage: terraform-provider-aml agent {%s|node|%s} ...\n", strings.Join(supervise.Commands, "|"), strings.Join(hostagent.Commands, "|"))
		return 2
	}
	if code, ok := supervise.Main(args); ok {
		return code
	}
	switch args[0] {
	case "node":
		if len(args) != 4 {
			fmt.Fprintln(os.Stderr, "usage: terraform-provider-aml agent node <workspace-dir> <pool> <node-id>")
			return 2
		}
		return pool.RunNode(args[1], args[2], args[3])
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
