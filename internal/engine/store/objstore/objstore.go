// Package objstore is where a workspace keeps its files, by key: snapshot
// blobs (content-addressed), and each run's outputs and logs. Dir keeps them
// in a directory (the embedded workspace's own), S3 in a bucket of any
// S3-compatible server (the shared workspace's).
package objstore

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strings"
	"time"
)

// ErrNotFound is returned (wrapped) for a key that holds no object.
var ErrNotFound = errors.New("object not found")

// Info describes one object.
type Info struct {
	Key     string
	Size    int64
	ModTime time.Time
}

// Store is a flat namespace of objects keyed by slash-separated paths.
// Implementations are safe for concurrent use; a Put is atomic (a reader sees
// the old object, none, or the whole new one).
type Store interface {
	// Put stores size bytes read from body under key, replacing any object.
	// body is seekable so that a failed request can be retried from the start.
	Put(ctx context.Context, key string, body io.ReadSeeker, size int64) error
	// Get opens an object; ErrNotFound when there is none.
	Get(ctx context.Context, key string) (io.ReadCloser, error)
	// Stat describes an object; ErrNotFound when there is none.
	Stat(ctx context.Context, key string) (Info, error)
	// List returns every object whose key starts with prefix, sorted by key.
	List(ctx context.Context, prefix string) ([]Info, error)
	// Delete removes an object; deleting a missing key is not an error.
	Delete(ctx context.Context, key string) error
	// URI names an object (or, for a key ending in "/", a prefix) for people:
	// file:///dir/key or s3://bucket/prefix/key.
	URI(key string) string
	// String names the store in errors ("S3 bucket b at http://host:port").
	String() string
}

// CheckKey refuses a key that could escape its store or mean two things: it
// must be non-empty, relative, slash-separated, without empty, "." or ".."
// segments, backslashes or NUL bytes.
func CheckKey(key string) error {
	if key == "" {
		return fmt.Errorf("object key is empty")
	}
	if strings.ContainsAny(key, "\\\x00") {
		return fmt.Errorf("object key %q contains a backslash or NUL byte", key)
	}
	for _, seg := range strings.Split(key, "/") {
		if seg == "" || seg == "." || seg == ".." {
			return fmt.Errorf("object key %q has an empty, \".\" or \"..\" segment", key)
		}
	}
	return nil
}

// DeletePrefix removes every object under prefix.
func DeletePrefix(ctx context.Context, s Store, prefix string) error {
	infos, err := s.List(ctx, prefix)
	if err != nil {
		return err
	}
	for _, in := range infos {
		if err := s.Delete(ctx, in.Key); err != nil {
			return err
		}
	}
	return nil
}
