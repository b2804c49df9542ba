package snapshot

import (
	"bufio"
	"crypto/sha256"
	"encoding/gob"
	"encoding/hex"
	"os"
	"path/filepath"
)

// fileStat is what must be unchanged for a cached hash to be trusted.
type fileStat struct {
	Size    int64
	MtimeNs int64
	CtimeNs int64
	Ino     uint64
	Mode    uint32
}

const statCacheVersion = 1

type statCacheFile struct {
	Version int
	Dir     string
	Entries map[string]cacheEntry
}

type cacheEntry struct {
	Stat   fileStat
	SHA256 string
}

// statCache is the cache of one source directory. A nil *statCache is a valid, disabled cache.
type statCache struct {
	path    string
	dir     string
	old     map[string]cacheEntry
	tmp     *os.File // created up front so its mtime gives the filesystem's clock at the start
	fsStart int64
}

func openStatCache(cacheDir, absDir string) *statCache {
	sum := sha256.Sum256([]byte(absDir))
	name := hex.EncodeToString(sum[:])
	c := &statCache{path: filepath.Join(cacheDir, name+".gob"), dir: absDir}
	c.old = loadStatCache(c.path, absDir)
	if err := os.MkdirAll(cacheDir, 0o700); err != nil {
		return c
	}
	tmp, err := os.CreateTemp(cacheDir, name+".*.tmp")
	if err != nil {
		return c
	}
	fi, err := tmp.Stat()
	if err != nil {
		tmp.Close()
		os.Remove(tmp.Name())
		return c
	}
	c.tmp, c.fsStart = tmp, fi.ModTime().UnixNano()
	return c
}

// loadStatCache returns the cached entries, or nil when the file is missing, corrupt or foreign.
func loadStatCache(path, absDir string) (entries map[string]cacheEntry) {
	f, err := os.Open(path)
	if err != nil {
		return nil
	}
	defer f.Close()
	// gob is not meant for hostile input; a damaged file must only cost a re-hash.
	defer func() {
		if recover() != nil {
			entries = nil
		}
	}()
	var cf statCacheFile
	if err := gob.NewDecoder(bufio.NewReader(f)).Decode(&cf); err != nil {
		return nil
	}
	if cf.Version != statCacheVersion || cf.Dir != absDir {
		return nil
	}
	return cf.Entries
}

func (c *statCache) lookup(rel string, st fileStat) (string, bool) {
	if c == nil {
		return "", false
	}
	e, ok := c.old[rel]
	if !ok || e.Stat != st || len(e.SHA256) != sha256.Size*2 {
		return "", false
	}
	return e.SHA256, true
}

// save records the hashed files. A file whose mtime or ctime is not before the start of this Build
// is left out: it could still change within the same timestamp tick without its stat changing
// (git's "racy clean" problem), so it is re-hashed next time.
func (c *statCache) save(files []file) {
	if c == nil || c.tmp == nil {
		return
	}
	entries := make(map[string]cacheEntry, len(files))
	dirty := false
	for i := range files {
		f := &files[i]
		if f.isLink() {
			continue
		}
		if f.st.MtimeNs >= c.fsStart || f.st.CtimeNs >= c.fsStart {
			dirty = true
			continue
		}
		e := cacheEntry{Stat: f.st, SHA256: f.sha}
		if old, ok := c.old[f.rel]; !ok || old != e {
			dirty = true
		}
		entries[f.rel] = e
	}
	if !dirty && len(entries) == len(c.old) {
		c.discard()
		return
	}
	tmp := c.tmp
	c.tmp = nil
	bw := bufio.NewWriter(tmp)
	err := gob.NewEncoder(bw).Encode(statCacheFile{Version: statCacheVersion, Dir: c.dir, Entries: entries})
	if err == nil {
		err = bw.Flush()
	}
	if cerr := tmp.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp.Name(), c.path)
	}
	if err != nil {
		os.Remove(tmp.Name())
	}
}

func (c *statCache) discard() {
	if c == nil || c.tmp == nil {
		return
	}
	c.tmp.Close()
	os.Remove(c.tmp.Name())
	c.tmp = nil
}
