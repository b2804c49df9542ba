// Package agent dispatches the provider binary's `agent` subcommands: the detached
// helpers the engine starts (the run supervisor today, node agents later).
package agent

import (
	"fmt"
	"os"

	"github.com/openaml/terraform-provider-aml/internal/engine/target/local"
)

// Main runs `agent <subcommand> ...` and returns the exit code.
func Main(args []string) int {
	if len(args) == 0 {
		fmt.Fprintln(os.Stderr, "usage: terraform-provider-aml agent supervise <run-dir>")
		return 2
	}
	switch args[0] {
	case "supervise":
		if len(args) != 2 {
			fmt.Fprintln(os.Stderr, "usage: terraform-provider-aml agent supervise <run-dir>")
			return 2
		}
		return local.Supervise(args[1])
	default:
		fmt.Fprintf(os.Stderr, "unknown agent subcommand %q\n", args[0])
		return 2
	}
}

// MaybeRun runs the agent and exits when os.Args asks for it. Test binaries call
// it from TestMain, since the engine starts agents by re-executing itself.
func MaybeRun() {
	if len(os.Args) > 1 && os.Args[1] == "agent" {
		os.Exit(Main(os.Args[2:]))
	}
}
