package snapshot

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"testing"
)

// makeTree10k writes 10,000 files of ~1 KiB as 10 x 10 directories of 100 files.
func makeTree10k(b *testing.B) string {
	b.Helper()
	dir := b.TempDir()
	content := make([]byte, 1024)
	for i := range 10 {
		for j := range 10 {
			sub := filepath.Join(dir, fmt.Sprintf("pkg%d", i), fmt.Sprintf("mod%d", j))
			if err := os.MkdirAll(sub, 0o755); err != nil {
				b.Fatal(err)
			}
			for k := range 100 {
				copy(content, fmt.Sprintf("file %d/%d/%d\n", i, j, k))
				if err := os.WriteFile(filepath.Join(sub, fmt.Sprintf("f%03d.py", k)), content, 0o644); err != nil {
					b.Fatal(err)
				}
			}
		}
	}
	settle() // let the stat cache trust the new files
	return dir
}

var benchOpts = Options{Limits: Limits{MaxFiles: 20000}}

func BenchmarkBuild10kCold(b *testing.B) {
	dir := makeTree10k(b)
	caches := b.TempDir()
	ctx := context.Background()
	i := 0
	for b.Loop() {
		opts := benchOpts
		opts.StatCacheDir = filepath.Join(caches, fmt.Sprint(i))
		i++
		if _, err := Build(ctx, dir, opts); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkBuild10kWarm(b *testing.B) {
	dir := makeTree10k(b)
	ctx := context.Background()
	opts := benchOpts
	opts.StatCacheDir = b.TempDir()
	if _, err := Build(ctx, dir, opts); err != nil {
		b.Fatal(err)
	}
	before := hashedFiles.Load()
	for b.Loop() {
		if _, err := Build(ctx, dir, opts); err != nil {
			b.Fatal(err)
		}
	}
	if n := hashedFiles.Load() - before; n != 0 {
		b.Fatalf("warm builds hashed %d files", n)
	}
}
