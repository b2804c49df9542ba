// Command envbuild times one env.Cache.Ensure (a build, or a cache hit) for the
// environment benchmark in bench/env.sh. It prints JSON on stdout.
package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"os"
	"strings"
	"time"

	"github.com/openaml/terraform-provider-aml/internal/engine/env"
)

func main() {
	root := flag.String("root", "", "environment cache directory")
	pkgs := flag.String("pkgs", "", "comma-separated pip packages")
	path := flag.String("path", os.Getenv("PATH"), "PATH the builder sees (leave out uv to force venv+pip)")
	flag.Parse()
	e := env.Environment{Python: &env.Python{Conda: &env.CondaDependencies{PipPackages: strings.Split(*pkgs, ",")}}}
	start := time.Now()
	res, err := env.Cache{Root: *root}.Ensure(context.Background(), e, *path, io.Discard)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	_ = json.NewEncoder(os.Stdout).Encode(map[string]any{
		"seconds": time.Since(start).Seconds(), "cache_hit": res.CacheHit, "builder": res.Builder, "python": res.Python,
	})
}
