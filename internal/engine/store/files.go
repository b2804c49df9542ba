package store

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"strings"
	"sync"

	"github.com/openaml/terraform-provider-aml/internal/engine/store/objstore"
)

// Files of a shared workspace: the object store holds the truth, this
// machine's cache (s.Dir) a copy that may be lost at any time. Keys, under
// the workspace's UUID:
//
//	<uuid>/blobs/sha256/<2 hex>/<62 hex>   snapshot files, content-addressed
//	<uuid>/runs/<run id>/outputs/<path>    a run's outputs, uploaded at collect
//	<uuid>/runs/<run id>/logs/<path>       a run's logs, uploaded at collect
//
// On an embedded workspace the object store is the workspace directory itself,
// so every method here is a no-op.

// Objects is the shared workspace's object store (nil when embedded, or when
// the shared backend keeps files in the cache only).
func (s *Store) Objects() objstore.Store {
	if s.shared == nil {
		return nil
	}
	return s.shared.cfg.Objects
}

func (s *Store) objectKey(rel string) string { return s.shared.uuid + "/" + rel }

func blobKey(sha string) string { return "blobs/sha256/" + sha[:2] + "/" + sha[2:] }

func validSHA(sha string) bool {
	if len(sha) != 64 {
		return false
	}
	_, err := hex.DecodeString(sha)
	return err == nil && strings.ToLower(sha) == sha
}

// parallel runs fn on every item with a few workers; the first error wins.
func parallel(parent context.Context, items []string, fn func(context.Context, string) error) error {
	ctx, cancel := context.WithCancel(parent)
	defer cancel()
	ch := make(chan string)
	var wg sync.WaitGroup
	var once sync.Once
	var first error
	for w := 0; w < 8; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for it := range ch {
				if err := fn(ctx, it); err != nil {
					once.Do(func() { first = err; cancel() })
				}
			}
		}()
	}
	for _, it := range items {
		if ctx.Err() != nil {
			break
		}
		ch <- it
	}
	close(ch)
	wg.Wait()
	if first == nil {
		first = parent.Err()
	}
	return first
}

// PushBlobs uploads the snapshot blobs (by sha256, from the local blob cache)
// that the object store lacks.
func (s *Store) PushBlobs(ctx context.Context, shas []string) error {
	obj := s.Objects()
	if obj == nil {
		return nil
	}
	return parallel(ctx, shas, func(ctx context.Context, sha string) error {
		if !validSHA(sha) {
			return fmt.Errorf("blob %q is not a sha256", sha)
		}
		key := s.objectKey(blobKey(sha))
		if _, err := obj.Stat(ctx, key); err == nil {
			return nil
		} else if !errors.Is(err, objstore.ErrNotFound) {
			return err
		}
		return putFile(ctx, obj, key, filepath.Join(s.BlobsPath(), "sha256", sha[:2], sha[2:]))
	})
}

// FetchBlobs downloads into the local cache the blobs it lacks, checking each
// one's content against its name.
func (s *Store) FetchBlobs(ctx context.Context, shas []string) error {
	obj := s.Objects()
	if obj == nil {
		return nil
	}
	return parallel(ctx, shas, func(ctx context.Context, sha string) error {
		if !validSHA(sha) {
			return fmt.Errorf("blob %q is not a sha256", sha)
		}
		dst := filepath.Join(s.BlobsPath(), "sha256", sha[:2], sha[2:])
		if st, err := os.Stat(dst); err == nil && st.Mode().IsRegular() {
			return nil
		}
		return getFile(ctx, obj, s.objectKey(blobKey(sha)), dst, sha)
	})
}

// runFileDirs are the parts of a run directory that the object store keeps.
var runFileDirs = []string{"outputs", "logs"}

// PushRunFiles uploads a collected run's outputs and logs (regular files only;
// links were refused at collect) from the directories Collect named, which
// are the run directory's outputs/ and logs/ unless the target keeps them
// elsewhere (a Slurm shared_root). An empty directory argument means the run
// directory's own.
func (s *Store) PushRunFiles(ctx context.Context, runID, outputsDir, logsDir string) error {
	obj := s.Objects()
	if obj == nil {
		return nil
	}
	if err := checkRunID(runID); err != nil {
		return err
	}
	dirs := map[string]string{"outputs": outputsDir, "logs": logsDir}
	type file struct{ key, src string }
	var files []file
	for _, sub := range runFileDirs {
		root := dirs[sub]
		if root == "" {
			root = filepath.Join(s.RunDir(runID), sub)
		}
		err := filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
			if err != nil {
				if errors.Is(err, fs.ErrNotExist) {
					return nil
				}
				return err
			}
			if !d.Type().IsRegular() {
				return nil
			}
			rel, err := filepath.Rel(root, p)
			if err != nil {
				return err
			}
			rel = sub + "/" + filepath.ToSlash(rel)
			if objstore.CheckKey(rel) != nil {
				return nil // a name no object can have: it stays local
			}
			files = append(files, file{key: s.objectKey("runs/" + runID + "/" + rel), src: p})
			return nil
		})
		if err != nil {
			return fmt.Errorf("reading run %s files: %w", runID, err)
		}
	}
	keys := make([]string, len(files))
	src := make(map[string]string, len(files))
	for i, f := range files {
		keys[i], src[f.key] = f.key, f.src
	}
	return parallel(ctx, keys, func(ctx context.Context, key string) error {
		return putFile(ctx, obj, key, src[key])
	})
}

// FetchRunFiles downloads a run's outputs and logs into the local run
// directory where a file is missing or differs in size. It reports whether the
// object store had any file of the run.
func (s *Store) FetchRunFiles(ctx context.Context, runID string) (bool, error) {
	obj := s.Objects()
	if obj == nil {
		return false, nil
	}
	if err := checkRunID(runID); err != nil {
		return false, err
	}
	prefix := s.objectKey("runs/" + runID + "/")
	infos, err := obj.List(ctx, prefix)
	if err != nil {
		return false, err
	}
	dir := s.RunDir(runID)
	var keys []string
	for _, in := range infos {
		rel := strings.TrimPrefix(in.Key, prefix)
		top, _, _ := strings.Cut(rel, "/")
		if objstore.CheckKey(rel) != nil || (top != "outputs" && top != "logs") {
			continue
		}
		if st, err := os.Lstat(filepath.Join(dir, filepath.FromSlash(rel))); err == nil && st.Mode().IsRegular() && st.Size() == in.Size {
			continue
		}
		keys = append(keys, in.Key)
	}
	err = parallel(ctx, keys, func(ctx context.Context, key string) error {
		rel := strings.TrimPrefix(key, prefix)
		return getFile(ctx, obj, key, filepath.Join(dir, filepath.FromSlash(rel)), "")
	})
	return len(infos) > 0, err
}

// RunFilesURI is where a run's files of one kind ("outputs" or "logs") are
// for any machine: s3://bucket/prefix/<uuid>/runs/<id>/outputs/ on a shared
// workspace, file:///<workspace>/runs/<id>/outputs/ on an embedded one.
func (s *Store) RunFilesURI(runID, kind string) string {
	if obj := s.Objects(); obj != nil {
		return obj.URI(s.objectKey("runs/" + runID + "/" + kind + "/"))
	}
	return objstore.Dir{Root: s.Dir}.URI(path.Join(RunsDir, runID, kind) + "/")
}

func checkRunID(id string) error {
	if id == "" || strings.ContainsAny(id, "/\\\x00") || id == "." || id == ".." {
		return fmt.Errorf("run id %q is not a run id", id)
	}
	return nil
}

func putFile(ctx context.Context, obj objstore.Store, key, src string) error {
	f, err := os.Open(src)
	if err != nil {
		return fmt.Errorf("uploading to %s: %w", obj, err)
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return err
	}
	return obj.Put(ctx, key, f, st.Size())
}

// getFile downloads key to dst through a temporary file renamed into place;
// with wantSHA the content must hash to it.
func getFile(ctx context.Context, obj objstore.Store, key, dst, wantSHA string) error {
	r, err := obj.Get(ctx, key)
	if err != nil {
		return err
	}
	defer r.Close()
	if err := os.MkdirAll(filepath.Dir(dst), 0o755); err != nil {
		return err
	}
	f, err := os.CreateTemp(filepath.Dir(dst), ".fetch-*")
	if err != nil {
		return err
	}
	defer os.Remove(f.Name())
	h := sha256.New()
	_, err = io.Copy(io.MultiWriter(f, h), r)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("downloading %s: %w", obj.URI(key), err)
	}
	if wantSHA != "" && hex.EncodeToString(h.Sum(nil)) != wantSHA {
		return fmt.Errorf("downloading %s: content does not match its sha256; the object store copy is corrupt", obj.URI(key))
	}
	return os.Rename(f.Name(), dst)
}
