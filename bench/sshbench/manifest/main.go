// Command manifest prints the size of a directory's snapshot manifest as the SSH driver sends
// it to a host (JSON of *snapshot.Manifest), for bench/ssh.sh to put the bytes of a one-file
// re-run in proportion.
//
//	manifest SOURCE_DIR
//
// It prints "<files> <json_bytes>".
package main

import (
	"context"
	"encoding/json"
	"fmt"
	"os"

	"github.com/openaml/terraform-provider-aml/internal/engine/snapshot"
)

func main() {
	if len(os.Args) != 2 {
		fmt.Fprintln(os.Stderr, "usage: manifest SOURCE_DIR")
		os.Exit(2)
	}
	m, err := snapshot.Build(context.Background(), os.Args[1], snapshot.Options{
		Limits: snapshot.Limits{MaxFiles: 20000, MaxBytes: 1 << 30},
	})
	if err != nil {
		fmt.Fprintln(os.Stderr, "manifest:", err)
		os.Exit(1)
	}
	b, err := json.Marshal(m)
	if err != nil {
		fmt.Fprintln(os.Stderr, "manifest:", err)
		os.Exit(1)
	}
	fmt.Printf("%d %d\n", m.Files, len(b))
}
