package supervise

import (
	"bytes"
	"encoding/binary"
	"os"
	"path/filepath"

	"golang.org/x/sys/unix"
)

// statusWatch signals on C (at most one pending signal) each time a file named
// like a watched file is created, written and closed, or renamed into its
// directory: the supervisor writes every status to a temporary file and
// renames it into place (writeJSONAtomic). Other files of the directory (the
// metrics a script appends to, the spec) do not wake it.
type StatusWatch struct {
	C    chan struct{}
	f    *os.File
	done chan struct{}
}

func WatchStatus(paths ...string) (*StatusWatch, error) {
	fd, err := unix.InotifyInit1(unix.IN_CLOEXEC | unix.IN_NONBLOCK)
	if err != nil {
		return nil, err
	}
	names := map[string]bool{}
	dirs := map[string]bool{}
	for _, path := range paths {
		names[filepath.Base(path)] = true
		if dirs[filepath.Dir(path)] {
			continue
		}
		dirs[filepath.Dir(path)] = true
		if _, err := unix.InotifyAddWatch(fd, filepath.Dir(path), unix.IN_MOVED_TO|unix.IN_CLOSE_WRITE|unix.IN_CREATE); err != nil {
			unix.Close(fd)
			return nil, err
		}
	}
	// Non-blocking, so the runtime poller owns it and Close ends a pending Read.
	w := &StatusWatch{C: make(chan struct{}, 1), f: os.NewFile(uintptr(fd), "inotify"), done: make(chan struct{})}
	go w.read(names)
	return w, nil
}

func (w *StatusWatch) read(names map[string]bool) {
	defer close(w.done)
	buf := make([]byte, 64*(unix.SizeofInotifyEvent+unix.NAME_MAX+1))
	for {
		n, err := w.f.Read(buf)
		if err != nil {
			return
		}
		for off := 0; off+unix.SizeofInotifyEvent <= n; {
			nameLen := int(binary.NativeEndian.Uint32(buf[off+12 : off+16]))
			end := min(off+unix.SizeofInotifyEvent+nameLen, n)
			got := bytes.TrimRight(buf[off+unix.SizeofInotifyEvent:end], "\x00")
			mask := binary.NativeEndian.Uint32(buf[off+4 : off+8])
			if names[string(got)] || mask&unix.IN_Q_OVERFLOW != 0 {
				select {
				case w.C <- struct{}{}:
				default:
				}
			}
			off = end
		}
	}
}

// Close stops the watch without waiting for the kernel to drop it: closing an
// inotify instance with watches waits for a grace period (about 20 ms), which
// a run's Wait would add to every apply. A goroutine of its own closes the
// instance and waits for the reader to end; until then C may still get a
// signal, which nobody has to read (the send never blocks).
func (w *StatusWatch) Close() error {
	go func() {
		_ = w.f.Close()
		<-w.done
	}()
	return nil
}
