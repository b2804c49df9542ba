//go:build !linux && !darwin && !freebsd && !netbsd

package snapshot

import "io/fs"

// statOf without ctime and inode: size, mtime and mode still catch ordinary edits.
func statOf(fi fs.FileInfo) fileStat {
	return fileStat{Size: fi.Size(), MtimeNs: fi.ModTime().UnixNano(), Mode: uint32(fi.Mode())}
}
