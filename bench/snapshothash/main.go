// Command snapshothash computes the provider's snapshot hash of a directory, the way a plan does,
// for bench/run.sh to time against `tar | sha256sum`.
//
//	snapshothash -cache DIR SOURCE_DIR
//
// It prints "<hash> <files> <bytes> <build_ns>": the manifest hash, its file count and byte total,
// and the nanoseconds spent inside snapshot.Build (without process start-up).
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"time"

	"github.com/openaml/terraform-provider-aml/internal/engine/snapshot"
)

func main() {
	cache := flag.String("cache", "", "stat cache directory (empty: no cache)")
	flag.Usage = func() {
		fmt.Fprintln(os.Stderr, "usage: snapshothash [-cache DIR] SOURCE_DIR")
		flag.PrintDefaults()
	}
	flag.Parse()
	if flag.NArg() != 1 {
		flag.Usage()
		os.Exit(2)
	}
	opts := snapshot.Options{
		Limits:       snapshot.Limits{MaxFiles: 20000, MaxBytes: 1 << 30},
		StatCacheDir: *cache,
	}
	start := time.Now()
	m, err := snapshot.Build(context.Background(), flag.Arg(0), opts)
	elapsed := time.Since(start)
	if err != nil {
		fmt.Fprintln(os.Stderr, "snapshothash:", err)
		os.Exit(1)
	}
	fmt.Printf("%s %d %d %d\n", m.Hash, m.Files, m.Bytes, elapsed.Nanoseconds())
}
