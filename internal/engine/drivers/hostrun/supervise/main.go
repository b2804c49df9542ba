package supervise

import (
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
)

// Commands are the agent subcommands that run inside a run directory: what
// Main dispatches, in the provider binary (`terraform-provider-aml agent ...`)
// and in the small supervisor binary shipped beside it (cmd/aml-supervisor).
var Commands = []string{"supervise", "supervise-rank", "rank-epilog", "container"}

// Main runs one of Commands (args[0] is the subcommand) and returns its exit
// code; ok is false when args[0] is none of them.
func Main(args []string) (code int, ok bool) {
	if len(args) == 0 {
		return 0, false
	}
	usage := func(u string) (int, bool) {
		fmt.Fprintln(os.Stderr, "usage: terraform-provider-aml agent "+u)
		return 2, true
	}
	switch args[0] {
	case "supervise":
		if len(args) != 2 {
			return usage("supervise <run-dir>")
		}
		return Supervise(args[1]), true
	case "container":
		if len(args) != 2 {
			return usage("container <run-dir> (started by the supervisor)")
		}
		return KeepContainer(args[1]), true
	case "supervise-rank":
		if len(args) != 2 {
			return usage("supervise-rank <run-dir> (under srun)")
		}
		return SuperviseRank(args[1]), true
	case "rank-epilog":
		if len(args) != 2 {
			return usage("rank-epilog <run-dir> (srun --task-epilog)")
		}
		rank, _ := strconv.Atoi(os.Getenv("SLURM_PROCID"))
		if err := EndRank(args[1], rank); err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 1, true
		}
		return 0, true
	}
	return 0, false
}

// BinaryPrefix starts the name of the supervisor binary shipped beside the
// provider's: terraform-provider-aml_v1.2.3 comes with aml-supervisor_v1.2.3 in
// the same directory (one release archive; `make install` copies both).
const BinaryPrefix = "aml-supervisor"

const providerPrefix = "terraform-provider-aml"

var siblings sync.Map // agent program path → resolved supervisor program path

// Command is the program and arguments that start a run's supervisor, given
// the agent command [exe, "agent", ...] of the program that stages the run. It
// is the small supervisor binary beside exe when there is one (2 MB: about
// 2 ms to start, against 10 ms for the 38 MB provider, whose every package
// initialises on each start), and the agent command itself otherwise (a
// development build, a test binary): both take the same arguments.
func Command(agentCommand []string) []string {
	if len(agentCommand) == 0 {
		return agentCommand
	}
	exe := agentCommand[0]
	p, ok := siblings.Load(exe)
	if !ok {
		p, _ = siblings.LoadOrStore(exe, sibling(exe))
	}
	if s := p.(string); s != "" {
		return append([]string{s}, agentCommand[1:]...)
	}
	return agentCommand
}

// BinaryBeside is where the supervisor binary of the provider binary exe
// goes: the same directory and name with terraform-provider-aml replaced by
// BinaryPrefix ("" when exe is not named as a provider binary).
func BinaryBeside(exe string) string {
	base := filepath.Base(exe)
	if !strings.HasPrefix(base, providerPrefix) {
		return ""
	}
	return filepath.Join(filepath.Dir(exe), BinaryPrefix+strings.TrimPrefix(base, providerPrefix))
}

// sibling is BinaryBeside(exe) when that is a regular executable file, else "".
func sibling(exe string) string {
	p := BinaryBeside(exe)
	if p == "" {
		return ""
	}
	fi, err := os.Stat(p)
	if err != nil || !fi.Mode().IsRegular() || fi.Mode().Perm()&0o111 == 0 {
		return ""
	}
	return p
}
