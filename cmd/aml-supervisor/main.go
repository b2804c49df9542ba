// Command aml-supervisor is the small binary that supervises one run in its run
// directory: the provider's `agent supervise`, `supervise-rank`, `rank-epilog`
// and `container` subcommands without the provider's 600 other packages, so
// that a run's supervisor starts in about 2 ms instead of 10. It is shipped
// beside terraform-provider-aml (same directory, same version suffix); the
// engine falls back to the provider binary itself when it is absent
// (supervise.Command). It takes the provider's arguments: `[agent] <subcommand>
// <run-dir>`.
package main

import (
	"fmt"
	"os"
	"strings"

	"github.com/openaml/terraform-provider-aml/internal/engine/drivers/hostrun/supervise"
)

func main() {
	args := os.Args[1:]
	if len(args) > 0 && args[0] == "agent" {
		args = args[1:]
	}
	code, ok := supervise.Main(args)
	if !ok {
		fmt.Fprintf(os.Stderr, "usage: aml-supervisor [agent] {%s} <run-dir>\n", strings.Join(supervise.Commands, "|"))
		code = 2
	}
	os.Exit(code)
}
