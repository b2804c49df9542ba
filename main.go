package main

import (
	"context"
	"flag"
	"log"
	"os"

	"github.com/hashicorp/terraform-plugin-framework/providerserver"

	"github.com/openaml/terraform-provider-aml/internal/agent"
	"github.com/openaml/terraform-provider-aml/internal/provider"
)

// version is set by goreleaser or the GNUmakefile (-ldflags "-X main.version=...").
var version = "dev"

func main() {
	// `terraform-provider-aml agent ...` runs the engine's detached helpers.
	if len(os.Args) > 1 && os.Args[1] == "agent" {
		os.Exit(agent.Main(os.Args[2:]))
	}

	var debug bool
	flag.BoolVar(&debug, "debug", false, "set to true to run the provider with support for debuggers like delve")
	flag.Parse()

	opts := providerserver.ServeOpts{
		Address: "registry.terraform.io/openaml/aml",
		Debug:   debug,
	}
	if err := providerserver.Serve(context.Background(), provider.New(version), opts); err != nil {
		log.Fatal(err.Error())
	}
}
