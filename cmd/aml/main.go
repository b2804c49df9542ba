// Command aml shows what a terraform-provider-aml workspace holds and runs:
// compute targets, runs, logs and metrics, on the command line and in a
// read-only local web view (`aml ui`). The engine does the work, as for the
// provider; this is glue.
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"

	"github.com/openaml/terraform-provider-aml/internal/agent"
)

// version is set by the GNUmakefile (-ldflags "-X main.version=...").
var version = "dev"

// Exit codes, for CI (README, "The aml command").
const (
	exitOK       = 0 // success; for `logs -f` and `wait`: the run Completed
	exitError    = 1 // any other error (workspace unreadable, target unreachable, ...)
	exitUsage    = 2 // bad command line
	exitNotFound = 3 // no such workspace or run
	exitFailed   = 4 // `logs -f`, `wait`: the run ended Failed
	exitCanceled = 5 // `logs -f`, `wait`: the run ended Canceled
	exitSignal   = 130
)

// codeError carries an exit code with an error.
type codeError struct {
	code int
	err  error
}

func (e *codeError) Error() string { return e.err.Error() }
func (e *codeError) Unwrap() error { return e.err }

func usageErr(format string, args ...any) error {
	return &codeError{code: exitUsage, err: fmt.Errorf(format, args...)}
}

const usage = `aml: see the compute targets and runs of a terraform-provider-aml workspace.

Usage:
  aml targets                       compute targets: kind, state, nodes, facts
  aml runs [--experiment E] [--status S] [--target T] [--metrics a,b] [--limit N]
  aml runs show RUN                 one run: status, timeline, parameters, metrics, outputs
  aml logs [-f] RUN                 a run's log; -f follows an active run until it ends
  aml metrics RUN [--history]       a run's metrics (last values, or every value by step)
  aml wait RUN                      wait until a run ends; exit code says how
  aml cancel RUN                    cancel an active run
  aml workspace                     the workspace found, and where
  aml ui [--listen 127.0.0.1:PORT]  a read-only web view of the workspace
  aml version

Finding the workspace (first that applies):
  -w, --workspace DIR|UUID|NAME     a workspace directory, id, or name under .aml/workspaces
  AML_WORKSPACE                     the same, from the environment
  -C, --chdir DIR                   a Terraform working directory (default: .): the
                                    aml_workspace in its state (terraform show -json),
                                    else the one workspace under DIR/.aml/workspaces
  --backend POSTGRES_URL            a workspace of the shared backend (with -w NAME|UUID, or
                                    the aml_workspace of DIR's state); AML_BACKEND the same.
                                    Its bucket: AML_S3_BUCKET, AML_S3_PREFIX, AML_S3_ENDPOINT;
                                    AML_SECRETS_KEY, AML_CACHE_DIR; PG* and AWS_* as usual

Every command takes --json (machine-readable output on stdout).
RUN is a run id as listed by 'aml runs' (or a unique prefix), or a full id <workspace>/runs/<run>.

Exit codes: 0 ok (a followed or waited run Completed), 1 error, 2 usage,
3 workspace or run not found, 4 run Failed, 5 run Canceled, 130 interrupted.
`

func main() {
	// The engine starts its detached helpers by re-executing a binary with
	// "agent"; aml answers that as the provider does.
	if len(os.Args) > 1 && os.Args[1] == "agent" {
		os.Exit(agent.Main(os.Args[2:]))
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	os.Exit(runMain(ctx, os.Args[1:], os.Stdout, os.Stderr))
}

func runMain(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	err := dispatch(ctx, args, stdout, stderr)
	if err == nil {
		return exitOK
	}
	var ce *codeError
	code := exitError
	if errors.As(err, &ce) {
		code = ce.code
	}
	if ctx.Err() != nil {
		code = exitSignal
	}
	if code == exitFailed || code == exitCanceled {
		if ce.err != nil && ce.err.Error() != "" {
			fmt.Fprintln(stderr, "aml:", ce.err)
		}
		return code
	}
	fmt.Fprintln(stderr, "aml:", err)
	if code == exitUsage {
		fmt.Fprintln(stderr, "run 'aml help' for usage")
	}
	return code
}

func dispatch(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 {
		fmt.Fprint(stderr, usage)
		return &codeError{code: exitUsage, err: errors.New("no command")}
	}
	cmd, rest := args[0], args[1:]
	c := &cli{stdout: stdout, stderr: stderr}
	switch cmd {
	case "help", "-h", "--help":
		fmt.Fprint(stdout, usage)
		return nil
	case "version", "--version":
		fmt.Fprintln(stdout, "aml", version)
		return nil
	case "targets":
		return c.targets(ctx, rest)
	case "runs":
		if len(rest) > 0 && rest[0] == "show" {
			return c.runShow(ctx, rest[1:])
		}
		if len(rest) > 0 && rest[0] == "list" {
			rest = rest[1:]
		}
		return c.runs(ctx, rest)
	case "logs":
		return c.logs(ctx, rest)
	case "metrics":
		return c.metrics(ctx, rest)
	case "wait":
		return c.wait(ctx, rest)
	case "cancel":
		return c.cancel(ctx, rest)
	case "workspace":
		return c.workspace(ctx, rest)
	case "ui":
		return c.ui(ctx, rest)
	}
	return usageErr("unknown command %q", cmd)
}
