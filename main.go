package main

import (
	"flag"
	"log"
	"os"
	"runtime/debug"
	"runtime/pprof"
	"strconv"

	"github.com/hashicorp/terraform-plugin-go/tfprotov6/tf6server"

	"github.com/openaml/terraform-provider-aml/internal/agent"
	"github.com/openaml/terraform-provider-aml/internal/engine/drivers/hostrun/supervise"
	"github.com/openaml/terraform-provider-aml/internal/provider"
)

// version is set by goreleaser or the GNUmakefile (-ldflags "-X main.version=...").
var version = "dev"

func main() {
	// `terraform-provider-aml agent ...` runs the engine's detached helpers.
	if len(os.Args) > 1 && os.Args[1] == "agent" {
		restoreSDKLogEnv()
		os.Exit(agent.Main(os.Args[2:]))
	}

	tuneGC()

	var debug bool
	flag.BoolVar(&debug, "debug", false, "set to true to run the provider with support for debuggers like delve")
	flag.Parse()

	// AML_CPUPROFILE=<prefix> (benchmarks only; off when unset) writes a CPU profile of
	// this provider process to <prefix>.<pid>.pprof, for `go tool pprof` (bench/README.md).
	if prefix := os.Getenv("AML_CPUPROFILE"); prefix != "" {
		if stop := startCPUProfile(prefix); stop != nil {
			defer stop()
		}
	}

	if !debug {
		quietSDKLogs()
	}

	var opts []tf6server.ServeOpt
	if debug {
		opts = append(opts, tf6server.WithManagedDebug())
	}
	// What providerserver.Serve does, with the provider's own server (the
	// framework's behind a plan fast path: internal/provider/fastpath.go).
	if err := tf6server.Serve("registry.terraform.io/openaml/aml", provider.NewProtocol6Server(version), opts...); err != nil {
		log.Print(err.Error())
		os.Exit(1) //nolint:gocritic // the profile of a failed serve is of no use
	}
}

// providerGCPercent is the provider's GOGC. Terraform starts the plugin 3–4
// times per command, each for a few RPCs and 3–10 MB of garbage: at Go's 100 it
// collected 2–3 times per start (15 ms of CPU in an unchanged plan of one run,
// which terraform_data and a plugin that never reaches 4 MB do not pay). At 400
// a start never does, and a long apply keeps at most five times its live heap.
const providerGCPercent = 400

// tuneGC sets providerGCPercent, unless the user set GOGC (or GOMEMLIMIT) for the
// process themselves.
func tuneGC() {
	if os.Getenv("GOGC") != "" || os.Getenv("GOMEMLIMIT") != "" {
		return
	}
	debug.SetGCPercent(providerGCPercent)
}

// startCPUProfile starts a CPU profile written to <prefix>.<pid>.pprof; nil when it
// cannot (the provider then runs unprofiled: a benchmark aid must not break it).
func startCPUProfile(prefix string) (stop func()) {
	f, err := os.Create(prefix + "." + strconv.Itoa(os.Getpid()) + ".pprof")
	if err != nil {
		return nil
	}
	if err := pprof.StartCPUProfile(f); err != nil {
		f.Close()
		return nil
	}
	return func() {
		pprof.StopCPUProfile()
		f.Close()
	}
}

// sdkLogVars are the variables terraform-plugin-go, -framework and the
// provider's own logger (tflog) read their log levels from (at every RPC);
// logVars are those that make terraform keep a provider's logs at all (it drops
// them otherwise).
var (
	sdkLogVars = supervise.QuietLogVars
	logVars    = append([]string{"TF_LOG", "TF_LOG_PROVIDER"}, sdkLogVars...)
)

// quietSDKLogs turns the SDK's logs and the provider's own off when terraform
// would drop them. With no level set they log at TRACE (the SDK a few lines per
// schema attribute per call, the provider a few per run), format every line as
// JSON and terraform parses each one to throw it away: on a plan of 100 runs
// the SDK's were about 40% of the CPU of both processes. With TF_LOG,
// TF_LOG_PROVIDER or any of these levels set, nothing changes. The marker
// (supervise.QuietLogMarker) tells the agents this process starts, and the
// runs' supervisors, that these values are not the user's.
func quietSDKLogs() {
	for _, k := range logVars {
		if _, ok := os.LookupEnv(k); ok {
			return
		}
	}
	for _, k := range sdkLogVars {
		_ = os.Setenv(k, "off")
	}
	_ = os.Setenv(supervise.QuietLogMarker, "1")
}

// restoreSDKLogEnv gives an agent (and the scripts it runs) the environment the
// user gave terraform: without the variables quietSDKLogs set.
func restoreSDKLogEnv() {
	if os.Getenv(supervise.QuietLogMarker) != "1" {
		return
	}
	for _, k := range sdkLogVars {
		_ = os.Unsetenv(k)
	}
	_ = os.Unsetenv(supervise.QuietLogMarker)
}
