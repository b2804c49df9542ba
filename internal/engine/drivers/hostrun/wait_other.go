//go:build !linux

package hostrun

import "errors"

// statusWatch is Linux's (wait_linux.go); elsewhere Wait polls.
type statusWatch struct{ C chan struct{} }

func watchStatus(...string) (*statusWatch, error) {
	return nil, errors.New("no status watch on this OS")
}

func (w *statusWatch) Close() error { return nil }
