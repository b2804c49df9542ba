package run

import (
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"

	"golang.org/x/sys/unix"
)

// A run's directory is written by its script, which is untrusted input: any
// file the engine reads there may have been replaced by a FIFO (an open would
// block forever), a device such as /dev/urandom (a read would never end), or a
// link out of the run directory. Every read goes through OpenRunFile and a
// size bound.

// ErrNotRegular marks a run file that is not a regular file inside the run
// directory: a FIFO, device, socket or directory, or a link that leaves it.
var ErrNotRegular = errors.New("not a regular file inside the run directory")

// OpenRunFile opens path for reading when it is a regular file that resolves
// inside root; links that stay inside root are followed. It never blocks: a
// FIFO is refused, not waited on. A missing file is os.ErrNotExist.
func OpenRunFile(root, path string) (*os.File, error) {
	rel, err := filepath.Rel(root, path)
	if err != nil || rel == ".." || strings.HasPrefix(rel, ".."+string(filepath.Separator)) || filepath.IsAbs(rel) {
		return nil, fmt.Errorf("%s: %w (outside %s)", path, ErrNotRegular, root)
	}
	const flags = unix.O_RDONLY | unix.O_NONBLOCK | unix.O_CLOEXEC | unix.O_NOCTTY
	f, err := openBeneath(root, rel, flags)
	if err != nil {
		switch {
		case errors.Is(err, unix.ENOENT), errors.Is(err, unix.ENOTDIR):
			return nil, fmt.Errorf("%s: %w", path, os.ErrNotExist)
		case errors.Is(err, unix.EXDEV), errors.Is(err, unix.ELOOP):
			return nil, fmt.Errorf("%s: %w (a link leaves the run directory)", path, ErrNotRegular)
		}
		return nil, err
	}
	st, err := f.Stat()
	if err != nil {
		f.Close()
		return nil, err
	}
	if !st.Mode().IsRegular() {
		f.Close()
		return nil, fmt.Errorf("%s: %w (it is a %s)", path, ErrNotRegular, fileKind(st.Mode()))
	}
	return f, nil
}

// openBeneath opens rel under root with openat2(RESOLVE_BENEATH), or, on a
// kernel without openat2, by resolving links first and checking the result.
func openBeneath(root, rel string, flags int) (*os.File, error) {
	dir, err := unix.Open(root, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, &os.PathError{Op: "open", Path: root, Err: err}
	}
	defer unix.Close(dir)
	fd, err := unix.Openat2(dir, rel, &unix.OpenHow{Flags: uint64(flags), Resolve: unix.RESOLVE_BENEATH | unix.RESOLVE_NO_MAGICLINKS})
	if errors.Is(err, unix.ENOSYS) || errors.Is(err, unix.EPERM) {
		full := filepath.Join(root, rel)
		real, rerr := filepath.EvalSymlinks(full)
		if rerr != nil {
			return nil, unix.ENOENT
		}
		realRoot, _ := filepath.EvalSymlinks(root)
		if r, rerr := filepath.Rel(realRoot, real); rerr != nil || r == ".." || strings.HasPrefix(r, ".."+string(filepath.Separator)) {
			return nil, unix.EXDEV
		}
		fd, err = unix.Open(real, flags|unix.O_NOFOLLOW, 0)
	}
	if err != nil {
		return nil, err
	}
	return os.NewFile(uintptr(fd), filepath.Join(root, rel)), nil
}

func fileKind(m os.FileMode) string {
	switch {
	case m&os.ModeNamedPipe != 0:
		return "FIFO"
	case m&os.ModeDevice != 0:
		return "device"
	case m&os.ModeSocket != 0:
		return "socket"
	case m.IsDir():
		return "directory"
	}
	return "special file"
}

// ReadRunFile reads a regular file inside root, refusing one over limit bytes.
func ReadRunFile(root, path string, limit int64) ([]byte, error) {
	f, err := OpenRunFile(root, path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, limit+1))
	if err != nil {
		return nil, err
	}
	if int64(len(b)) > limit {
		return nil, fmt.Errorf("%s is larger than %d bytes", path, limit)
	}
	return b, nil
}
