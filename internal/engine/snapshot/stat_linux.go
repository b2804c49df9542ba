package snapshot

import (
	"io/fs"
	"syscall"
)

func statOf(fi fs.FileInfo) fileStat {
	s := fileStat{Size: fi.Size(), MtimeNs: fi.ModTime().UnixNano(), Mode: uint32(fi.Mode())}
	if st, ok := fi.Sys().(*syscall.Stat_t); ok {
		s.CtimeNs = st.Ctim.Nano()
		s.Ino = uint64(st.Ino)
	}
	return s
}
