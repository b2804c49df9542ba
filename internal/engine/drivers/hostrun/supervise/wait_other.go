//go:build !linux

package supervise

import "errors"

// statusWatch is Linux's (wait_linux.go); elsewhere Wait polls.
type StatusWatch struct{ C chan struct{} }

func WatchStatus(...string) (*StatusWatch, error) {
	return nil, errors.New("no status watch on this OS")
}

func (w *StatusWatch) Close() error { return nil }
