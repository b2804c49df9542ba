//go:build !linux

package snapshot

import "context"

// Memo is Build on this OS: without inotify there is no cheap way to know a
// tree is unchanged, so every Build walks it (with the stat cache).
type Memo struct{}

// Build is snapshot.Build.
func (mm *Memo) Build(ctx context.Context, dir string, opts Options) (*Manifest, error) {
	return Build(ctx, dir, opts)
}
