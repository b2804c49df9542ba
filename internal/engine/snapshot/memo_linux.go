//go:build linux

package snapshot

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"sync"
	"syscall"
	"unsafe"

	"golang.org/x/sys/unix"
)

// Memo keeps, in this process, the manifest of each directory Build made, for
// as long as nothing under that directory changed: every directory the walk
// read is watched with inotify from before it was read, so any change after
// that (a file written, created, removed, renamed, chmod'ed, touched) queues an
// event, and the next Build of the tree drops the manifest and walks again.
// The root's device and inode are checked too, so a path that now leads
// elsewhere (a renamed parent, a re-pointed symlink) is walked again.
//
// It is for the many resources of one plan that share a source_directory
// (a 100-run sweep hashed the same tree 100 times per plan): the first walks
// and hashes (with the stat cache), the rest cost a non-blocking read and a
// stat. Without inotify (another OS, no instances or watches left) it is
// Build. The zero Memo is ready to use; manifests it returns are shared and
// must not be modified.
//
// A tree is watched from its third Build on (plainBuilds): the first two are
// plain Builds. The kernel makes a process that drops inotify watches wait for
// a grace period (about 20 ms, at exit too), and terraform waits for the
// plugin's exit: a run planned for replacement is hashed twice by the plan
// and twice by the apply, which must not pay it for nothing.
type Memo struct {
	mu      sync.Mutex
	initErr error
	fd      int // inotify instance, -1 when none
	started bool
	seen    map[memoKey]int // plain Builds of each tree so far
	byKey   map[memoKey]*memoEntry
	byWD    map[int32][]*memoEntry
}

type memoKey struct {
	dir  string
	opts Options
}

type memoEntry struct {
	mu    sync.Mutex // one Build of a tree at a time; the others wait for it
	key   memoKey
	m     *Manifest
	dev   uint64
	ino   uint64
	wds   []int32
	valid bool
	gen   int // counts the events that touched this tree
}

// At most this many directories are watched per tree and per process: the
// watches count against the user's inotify limit (fs.inotify.max_user_watches),
// which editors and file watchers share. A larger tree is walked every time.
const (
	maxWatchesPerTree = 2048
	maxWatches        = 8192
)

// watchMask is every event that can change what a walk of the directory finds.
const watchMask = unix.IN_MODIFY | unix.IN_ATTRIB | unix.IN_CLOSE_WRITE | unix.IN_CREATE | unix.IN_DELETE |
	unix.IN_DELETE_SELF | unix.IN_MOVE_SELF | unix.IN_MOVED_FROM | unix.IN_MOVED_TO | unix.IN_ONLYDIR

// Build is snapshot.Build, answered from memory when the tree is unchanged
// since this Memo last built it with the same options.
func (mm *Memo) Build(ctx context.Context, dir string, opts Options) (*Manifest, error) {
	abs, err := filepath.Abs(dir)
	if err != nil || mm == nil {
		return Build(ctx, dir, opts)
	}
	key := memoKey{dir: abs, opts: opts}
	if mm.plainBuild(key) || !mm.start() {
		return Build(ctx, dir, opts)
	}
	mm.mu.Lock()
	mm.drainLocked()
	e := mm.byKey[key]
	if e == nil {
		e = &memoEntry{key: key}
		mm.byKey[key] = e
	}
	mm.mu.Unlock()

	e.mu.Lock()
	defer e.mu.Unlock()
	mm.mu.Lock()
	mm.drainLocked() // what happened while this waited for another Build
	if e.valid && sameRoot(abs, e.dev, e.ino) {
		m := e.m
		mm.mu.Unlock()
		return m, nil
	}
	mm.forgetLocked(e)
	gen := e.gen
	mm.mu.Unlock()

	dev, ino, ok := rootID(abs)
	var wds []int32
	watchOK := ok
	mm.mu.Lock()
	room := min(maxWatchesPerTree, maxWatches-len(mm.byWD))
	mm.mu.Unlock()
	m, err := buildWatched(ctx, dir, opts, func(absDir string) {
		if !watchOK || len(wds) >= room {
			watchOK = false
			return
		}
		wd, err := unix.InotifyAddWatch(mm.fd, absDir, watchMask)
		if err != nil {
			watchOK = false // e.g. out of watches: this tree is not memoized
			return
		}
		wds = append(wds, int32(wd))
	})

	mm.mu.Lock()
	defer mm.mu.Unlock()
	e.wds = wds
	for _, wd := range wds {
		mm.byWD[wd] = append(mm.byWD[wd], e)
	}
	mm.drainLocked()
	if err != nil || !watchOK || e.gen != gen {
		// Not memoized: no watches, or a change while walking (the manifest
		// is still what this walk saw, as Build's would be).
		mm.forgetLocked(e)
		return m, err
	}
	e.m, e.dev, e.ino, e.valid = m, dev, ino, true
	return m, nil
}

// plainBuilds is how many Builds of a tree are plain before it is watched.
const plainBuilds = 2

// plainBuild reports whether this Build of key is to be a plain one, and counts it.
func (mm *Memo) plainBuild(key memoKey) bool {
	mm.mu.Lock()
	defer mm.mu.Unlock()
	if mm.seen[key] >= plainBuilds {
		return false
	}
	if mm.seen == nil {
		mm.seen = map[memoKey]int{}
	}
	mm.seen[key]++
	return true
}

func (mm *Memo) start() bool {
	mm.mu.Lock()
	defer mm.mu.Unlock()
	if !mm.started {
		mm.started = true
		mm.fd = -1
		fd, err := unix.InotifyInit1(unix.IN_NONBLOCK | unix.IN_CLOEXEC)
		if err != nil {
			mm.initErr = err
			return false
		}
		mm.fd = fd
		mm.byKey = map[memoKey]*memoEntry{}
		mm.byWD = map[int32][]*memoEntry{}
	}
	return mm.fd >= 0
}

// drainLocked reads every queued event and invalidates the trees they touch;
// an overflow, or any read error but "nothing queued", invalidates them all.
func (mm *Memo) drainLocked() {
	var buf [16 << 10]byte
	for {
		n, err := unix.Read(mm.fd, buf[:])
		if errors.Is(err, syscall.EAGAIN) || (err == nil && n == 0) {
			return
		}
		if err != nil || n < unix.SizeofInotifyEvent {
			mm.invalidateAllLocked()
			return
		}
		for off := 0; off+unix.SizeofInotifyEvent <= n; {
			ev := (*unix.InotifyEvent)(unsafe.Pointer(&buf[off]))
			if ev.Mask&unix.IN_Q_OVERFLOW != 0 {
				mm.invalidateAllLocked()
			}
			for _, e := range mm.byWD[ev.Wd] {
				e.valid = false
				e.gen++
			}
			off += unix.SizeofInotifyEvent + int(ev.Len)
		}
	}
}

func (mm *Memo) invalidateAllLocked() {
	for _, e := range mm.byKey {
		e.valid = false
		e.gen++
	}
}

// forgetLocked drops e's manifest and the watches no other tree uses.
func (mm *Memo) forgetLocked(e *memoEntry) {
	e.valid, e.m = false, nil
	for _, wd := range e.wds {
		users := mm.byWD[wd]
		kept := users[:0]
		for _, u := range users {
			if u != e {
				kept = append(kept, u)
			}
		}
		if len(kept) == 0 {
			delete(mm.byWD, wd)
			_, _ = unix.InotifyRmWatch(mm.fd, uint32(wd))
		} else {
			mm.byWD[wd] = kept
		}
	}
	e.wds = nil
}

func rootID(abs string) (dev, ino uint64, ok bool) {
	fi, err := os.Stat(abs)
	if err != nil {
		return 0, 0, false
	}
	st, ok := fi.Sys().(*syscall.Stat_t)
	if !ok {
		return 0, 0, false
	}
	return uint64(st.Dev), st.Ino, true //nolint:unconvert // Dev is not uint64 on every arch
}

func sameRoot(abs string, dev, ino uint64) bool {
	d, i, ok := rootID(abs)
	return ok && d == dev && i == ino
}
