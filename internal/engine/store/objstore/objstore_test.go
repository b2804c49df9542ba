package objstore_test

import (
	"bytes"
	"context"
	"errors"
	"io"
	"strings"
	"testing"
	"time"

	"github.com/openaml/terraform-provider-aml/internal/engine/store/objstore"
	s3test "github.com/openaml/terraform-provider-aml/internal/testutil/s3"
)

// TestStores runs one suite on the directory store and on a bucket of a real
// S3-compatible server (versitygw).
func TestStores(t *testing.T) {
	t.Run("dir", func(t *testing.T) { suite(t, objstore.Dir{Root: t.TempDir()}) })
	t.Run("s3", func(t *testing.T) {
		srv := s3test.Start(t)
		cfg := srv.Config(srv.Bucket(t))
		cfg.Prefix = "team/ws"
		s, err := objstore.NewS3(context.Background(), cfg)
		if err != nil {
			t.Fatal(err)
		}
		suite(t, s)
	})
}

func put(t *testing.T, s objstore.Store, key, body string) {
	t.Helper()
	if err := s.Put(context.Background(), key, strings.NewReader(body), int64(len(body))); err != nil {
		t.Fatal(err)
	}
}

func get(t *testing.T, s objstore.Store, key string) string {
	t.Helper()
	r, err := s.Get(context.Background(), key)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	b, err := io.ReadAll(r)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func suite(t *testing.T, s objstore.Store) {
	ctx := context.Background()
	if _, err := s.Get(ctx, "runs/r1/outputs/model.pkl"); !errors.Is(err, objstore.ErrNotFound) {
		t.Fatalf("get of a missing key: %v", err)
	}
	if _, err := s.Stat(ctx, "runs/r1/outputs/model.pkl"); !errors.Is(err, objstore.ErrNotFound) {
		t.Fatalf("stat of a missing key: %v", err)
	}
	put(t, s, "runs/r1/outputs/model.pkl", "weights")
	put(t, s, "runs/r1/logs/std_log.txt", "hello\n")
	put(t, s, "runs/r10/outputs/x", "other run")
	put(t, s, "blobs/sha256/ab/cdef", "")
	if got := get(t, s, "runs/r1/outputs/model.pkl"); got != "weights" {
		t.Errorf("get = %q", got)
	}
	put(t, s, "runs/r1/outputs/model.pkl", "weights v2")
	if got := get(t, s, "runs/r1/outputs/model.pkl"); got != "weights v2" {
		t.Errorf("after overwrite get = %q", got)
	}
	in, err := s.Stat(ctx, "runs/r1/outputs/model.pkl")
	if err != nil || in.Size != int64(len("weights v2")) || in.Key != "runs/r1/outputs/model.pkl" || time.Since(in.ModTime) > time.Hour {
		t.Errorf("stat = %+v, %v", in, err)
	}
	if in, err := s.Stat(ctx, "blobs/sha256/ab/cdef"); err != nil || in.Size != 0 {
		t.Errorf("empty object: %+v, %v", in, err)
	}
	list, err := s.List(ctx, "runs/r1/")
	if err != nil {
		t.Fatal(err)
	}
	var keys []string
	for _, in := range list {
		keys = append(keys, in.Key)
	}
	if strings.Join(keys, ",") != "runs/r1/logs/std_log.txt,runs/r1/outputs/model.pkl" {
		t.Errorf("list runs/r1/ = %v", keys)
	}
	if all, _ := s.List(ctx, ""); len(all) != 4 {
		t.Errorf("list all = %v", all)
	}
	if err := s.Delete(ctx, "runs/r1/logs/std_log.txt"); err != nil {
		t.Fatal(err)
	}
	if err := s.Delete(ctx, "runs/r1/logs/std_log.txt"); err != nil {
		t.Errorf("deleting a missing key: %v", err)
	}
	if _, err := s.Stat(ctx, "runs/r1/logs/std_log.txt"); !errors.Is(err, objstore.ErrNotFound) {
		t.Errorf("deleted key: %v", err)
	}
	if err := objstore.DeletePrefix(ctx, s, "runs/"); err != nil {
		t.Fatal(err)
	}
	if all, _ := s.List(ctx, ""); len(all) != 1 {
		t.Errorf("after DeletePrefix runs/: %v", all)
	}
	for _, bad := range []string{"", "/abs", "a/../b", "a//b", "./a", "a\\b", "a\x00b", "a/"} {
		if err := s.Put(ctx, bad, bytes.NewReader(nil), 0); err == nil {
			t.Errorf("Put(%q) accepted", bad)
		}
	}
	if u := s.URI("runs/r1/outputs/"); !strings.HasSuffix(u, "runs/r1/outputs/") {
		t.Errorf("URI = %q", u)
	}
}

// A stopped server: the error names the bucket and the endpoint, never the
// secret; after a restart the store works again.
func TestS3ServerDown(t *testing.T) {
	srv := s3test.Start(t)
	cfg := srv.Config(srv.Bucket(t))
	s, err := objstore.NewS3(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	put(t, s, "k", "v")
	srv.Stop()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	err = s.Put(ctx, "k2", strings.NewReader("v"), 1)
	if err == nil {
		t.Fatal("put to a stopped server succeeded")
	}
	for _, want := range []string{cfg.Bucket, srv.Endpoint()} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not name %s", err, want)
		}
	}
	if strings.Contains(err.Error(), cfg.SecretAccessKey) {
		t.Errorf("error carries the secret key: %v", err)
	}
	srv.Restart()
	put(t, s, "k2", "v2")
	if got := get(t, s, "k"); got != "v" {
		t.Errorf("after restart get = %q", got)
	}
}

func TestS3BadConfig(t *testing.T) {
	ctx := context.Background()
	if _, err := objstore.NewS3(ctx, objstore.S3Config{}); err == nil || !strings.Contains(err.Error(), "bucket") {
		t.Errorf("empty bucket: %v", err)
	}
	_, err := objstore.NewS3(ctx, objstore.S3Config{Bucket: "b", AccessKeyID: "AK"})
	if err == nil || !strings.Contains(err.Error(), "secret access key") {
		t.Errorf("half credentials: %v", err)
	}
	if _, err := objstore.NewS3(ctx, objstore.S3Config{Bucket: "b", Prefix: "a/../b"}); err == nil || !strings.Contains(err.Error(), "prefix") {
		t.Errorf("bad prefix: %v", err)
	}
}
