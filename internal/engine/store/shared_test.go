package store_test

import (
	"context"
	"crypto/sha256"
	"database/sql"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/openaml/terraform-provider-aml/internal/engine/run"
	"github.com/openaml/terraform-provider-aml/internal/engine/store"
	"github.com/openaml/terraform-provider-aml/internal/engine/store/objstore"
	"github.com/openaml/terraform-provider-aml/internal/testutil/postgres"
	s3test "github.com/openaml/terraform-provider-aml/internal/testutil/s3"
)

// machine is one machine's view of a shared backend: its own cache.
func machine(t *testing.T, url string, s3 *objstore.S3Config, key string) store.Shared {
	sh := store.Shared{Postgres: url, CacheRoot: t.TempDir(), SecretsKey: key}
	if s3 != nil {
		sh.S3 = *s3
	}
	return sh
}

func writeFile(t *testing.T, p, body string) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(p, []byte(body), 0o644); err != nil {
		t.Fatal(err)
	}
}

func TestSharedBackend(t *testing.T) {
	ctx := context.Background()
	pg := postgres.Start(t)
	srv := s3test.Start(t)
	url := pg.NewDB(t)
	cfg := srv.Config(srv.Bucket(t))
	obj, err := objstore.NewS3(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}

	t.Run("files reach another machine", func(t *testing.T) {
		a, err := store.CreateShared(ctx, machine(t, url, &cfg, ""), store.Meta{Name: "files"})
		if err != nil {
			t.Fatal(err)
		}
		defer a.Close()
		body := "print('hi')\n"
		sum := sha256.Sum256([]byte(body))
		sha := hex.EncodeToString(sum[:])
		writeFile(t, filepath.Join(a.BlobsPath(), "sha256", sha[:2], sha[2:]), body)
		if err := a.PushBlobs(ctx, []string{sha}); err != nil {
			t.Fatal(err)
		}
		if err := a.PushBlobs(ctx, []string{sha}); err != nil { // present: nothing to send
			t.Fatal(err)
		}
		writeFile(t, filepath.Join(a.RunDir("r1"), "outputs", "model.txt"), "weights")
		writeFile(t, filepath.Join(a.RunDir("r1"), "outputs", "sub", "m.json"), "{}")
		writeFile(t, filepath.Join(a.RunDir("r1"), "logs", "std_log.txt"), "log\n")
		writeFile(t, filepath.Join(a.RunDir("r1"), "train.py"), "not uploaded: the snapshot is in blobs")
		if err := a.PushRunFiles(ctx, "r1", "", ""); err != nil {
			t.Fatal(err)
		}

		b, err := store.OpenShared(ctx, machine(t, url, &cfg, ""), "files") // by name
		if err != nil {
			t.Fatal(err)
		}
		defer b.Close()
		if b.SharedID() != a.SharedID() || b.Dir == a.Dir {
			t.Fatalf("b = %s in %s, a = %s in %s", b.SharedID(), b.Dir, a.SharedID(), a.Dir)
		}
		if err := b.FetchBlobs(ctx, []string{sha}); err != nil {
			t.Fatal(err)
		}
		if got, _ := os.ReadFile(filepath.Join(b.BlobsPath(), "sha256", sha[:2], sha[2:])); string(got) != body {
			t.Errorf("fetched blob = %q", got)
		}
		had, err := b.FetchRunFiles(ctx, "r1")
		if err != nil || !had {
			t.Fatalf("FetchRunFiles = %v, %v", had, err)
		}
		for rel, want := range map[string]string{"outputs/model.txt": "weights", "outputs/sub/m.json": "{}", "logs/std_log.txt": "log\n"} {
			if got, _ := os.ReadFile(filepath.Join(b.RunDir("r1"), rel)); string(got) != want {
				t.Errorf("%s on b = %q, want %q", rel, got, want)
			}
		}
		if _, err := os.Stat(filepath.Join(b.RunDir("r1"), "train.py")); err == nil {
			t.Error("a file outside outputs/ and logs/ was uploaded")
		}
		// This machine's helpers open the shared workspace by its cache
		// directory, as they open an embedded one.
		if st, err := os.Stat(filepath.Join(a.Dir, store.BackendFile)); err != nil || st.Mode().Perm() != 0o600 {
			t.Errorf("backend file: %v, %v", st, err)
		}
		byDir, err := store.Open(ctx, a.Dir)
		if err != nil || byDir.SharedID() != a.SharedID() || byDir.Objects() == nil {
			t.Fatalf("Open(cache dir) = %v, %v", byDir, err)
		}
		byDir.Close()
		if u := b.RunFilesURI("r1", "outputs"); u != obj.URI(a.SharedID()+"/runs/r1/outputs/") || !strings.HasPrefix(u, "s3://") {
			t.Errorf("outputs URI = %q", u)
		}
		if had, err := b.FetchRunFiles(ctx, "r2"); err != nil || had {
			t.Errorf("a run without files: %v, %v", had, err)
		}

		// A corrupt copy in the bucket is refused, not cached.
		other := sha256.Sum256([]byte("x"))
		bad := hex.EncodeToString(other[:])
		if err := obj.Put(ctx, a.SharedID()+"/blobs/sha256/"+bad[:2]+"/"+bad[2:], strings.NewReader("not x"), 5); err != nil {
			t.Fatal(err)
		}
		if err := b.FetchBlobs(ctx, []string{bad}); err == nil || !strings.Contains(err.Error(), "corrupt") {
			t.Errorf("corrupt blob: %v", err)
		}
		if _, err := os.Stat(filepath.Join(b.BlobsPath(), "sha256", bad[:2], bad[2:])); err == nil {
			t.Error("a corrupt blob was cached")
		}
	})

	t.Run("workspaces of one database are apart", func(t *testing.T) {
		x, err := store.CreateShared(ctx, machine(t, url, nil, ""), store.Meta{Name: "team-x"})
		if err != nil {
			t.Fatal(err)
		}
		defer x.Close()
		y, err := store.CreateShared(ctx, machine(t, url, nil, ""), store.Meta{Name: "team-y"})
		if err != nil {
			t.Fatal(err)
		}
		defer y.Close()
		if err := x.InsertRun(ctx, newRecord("r1", "k"), "o"); err != nil {
			t.Fatal(err)
		}
		if err := y.InsertRun(ctx, newRecord("r1", "k"), "o"); err != nil {
			t.Fatalf("same run id in another workspace: %v", err)
		}
		if n, _ := y.CountRuns(ctx); n != 1 {
			t.Errorf("team-y has %d runs", n)
		}
		// Same name again: the same workspace, adopted.
		x2, err := store.CreateShared(ctx, machine(t, url, nil, ""), store.Meta{Name: "team-x"})
		if err != nil {
			t.Fatal(err)
		}
		defer x2.Close()
		if x2.SharedID() != x.SharedID() {
			t.Errorf("re-create made %s, want %s", x2.SharedID(), x.SharedID())
		}
		if m, _ := x2.Meta(ctx); m.Name != "team-x" {
			t.Errorf("meta = %+v", m)
		}
		if _, err := store.OpenShared(ctx, machine(t, url, nil, ""), "nope"); !errors.Is(err, store.ErrNotFound) {
			t.Errorf("unknown workspace: %v", err)
		}
		if err := store.DeleteShared(ctx, machine(t, url, nil, ""), y.SharedID()); err != nil {
			t.Fatal(err)
		}
		if _, err := store.OpenShared(ctx, machine(t, url, nil, ""), y.SharedID()); !errors.Is(err, store.ErrNotFound) {
			t.Errorf("deleted workspace: %v", err)
		}
	})

	t.Run("credentials sealed, never plain", func(t *testing.T) {
		const password = "hunter2-very-secret"
		key := "k-" + strings.Repeat("z", 30)
		a, err := store.CreateShared(ctx, machine(t, url, &cfg, key), store.Meta{Name: "secrets"})
		if err != nil {
			t.Fatal(err)
		}
		defer a.Close()
		if err := a.PutSecrets("h1", map[string]string{"password": password}); err != nil {
			t.Fatal(err)
		}
		var got map[string]string
		b, err := store.OpenShared(ctx, machine(t, url, &cfg, key), a.SharedID())
		if err != nil {
			t.Fatal(err)
		}
		defer b.Close()
		if err := b.GetSecrets("h1", &got); err != nil || got["password"] != password {
			t.Fatalf("b's credentials: %v, %v", got, err)
		}
		// Nothing in the database holds the password in plain text.
		db, err := sql.Open("pgx", url)
		if err != nil {
			t.Fatal(err)
		}
		defer db.Close()
		var n int
		if err := db.QueryRow(`SELECT count(*) FROM ws_`+strings.ReplaceAll(a.SharedID(), "-", "")+`.target_secrets WHERE position($1::bytea in box) > 0`, []byte(password)).Scan(&n); err != nil || n != 0 {
			t.Errorf("plain password in target_secrets: %d, %v", n, err)
		}
		infos, _ := obj.List(ctx, a.SharedID()+"/")
		if len(infos) != 0 {
			t.Errorf("credentials went to the bucket: %v", infos)
		}
		wrong, err := store.OpenShared(ctx, machine(t, url, &cfg, "another key entirely"), a.SharedID())
		if err != nil {
			t.Fatal(err)
		}
		defer wrong.Close()
		if err := wrong.GetSecrets("h1", &got); err == nil || strings.Contains(err.Error(), password) || !strings.Contains(err.Error(), "another") {
			t.Errorf("wrong key: %v", err)
		}
		none, err := store.OpenShared(ctx, machine(t, url, &cfg, ""), a.SharedID())
		if err != nil {
			t.Fatal(err)
		}
		defer none.Close()
		if err := none.GetSecrets("h1", &got); !errors.Is(err, store.ErrNoSecretsHere) {
			t.Errorf("no key: %v", err)
		}
		if err := a.DeleteTarget(ctx, "h1"); err != nil {
			t.Fatal(err)
		}
		if err := b.GetSecrets("h1", &got); !errors.Is(err, store.ErrNoSecretsHere) {
			t.Errorf("after delete, b still reads credentials: %v", err)
		}
	})
}

// PostgreSQL stopped under an open store: writes fail naming the server (and
// not its password), nothing is half-written, and the same handle works again
// once the server is back.
func TestSharedPostgresDown(t *testing.T) {
	ctx := context.Background()
	pg := postgres.Start(t)
	url := pg.NewDB(t)
	s, err := store.CreateShared(ctx, machine(t, url, nil, ""), store.Meta{Name: "down"})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if err := s.InsertRun(ctx, newRecord("r1", "k"), "o"); err != nil {
		t.Fatal(err)
	}
	pg.Stop()
	_, err = s.UpdateRun(ctx, "r1", func(r *run.Record) error { r.Status = run.Starting; return nil })
	if err == nil {
		t.Fatal("update with the server stopped succeeded")
	}
	t.Logf("error with PostgreSQL stopped: %v", err)
	if !strings.Contains(err.Error(), "PostgreSQL") || !strings.Contains(err.Error(), fmt.Sprint(pg.Port)) {
		t.Errorf("error %q does not name PostgreSQL and its address", err)
	}
	if strings.Contains(err.Error(), pg.Password) {
		t.Errorf("error carries the password: %v", err)
	}
	_, err = store.OpenShared(ctx, machine(t, url, nil, ""), s.SharedID())
	if err == nil || !strings.Contains(err.Error(), "PostgreSQL at 127.0.0.1") || strings.Contains(err.Error(), pg.Password) {
		t.Errorf("open with the server stopped: %v", err)
	}
	pg.Restart()
	rec, err := s.GetRun(ctx, "r1")
	if err != nil || rec.Status != run.NotStarted {
		t.Fatalf("after restart: %+v, %v (the failed update must not have landed)", rec, err)
	}
	if _, err := s.UpdateRun(ctx, "r1", func(r *run.Record) error { r.Status = run.Starting; return nil }); err != nil {
		t.Fatalf("update after restart: %v", err)
	}
}

func TestSharedBadConnectionString(t *testing.T) {
	ctx := context.Background()
	const secret = "s3cr3t-pw"
	for _, conn := range []string{
		"postgres://u:" + secret + "@127.0.0.1:notaport/db",
		"host=127.0.0.1 port=x password=" + secret,
	} {
		_, err := store.CreateShared(ctx, store.Shared{Postgres: conn, CacheRoot: t.TempDir()}, store.Meta{Name: "w"})
		if err == nil {
			t.Fatalf("%q accepted", conn)
		}
		if strings.Contains(err.Error(), secret) {
			t.Errorf("error carries the password: %v", err)
		}
		if !strings.Contains(err.Error(), "PostgreSQL connection string") {
			t.Errorf("error %q does not say what is wrong", err)
		}
	}
}

// An empty connection string takes everything from the PG* environment, as
// psql does.
func TestSharedFromPGEnvironment(t *testing.T) {
	pg := postgres.Start(t)
	pg.CreateDB(t, "fromenv")
	for k, v := range map[string]string{"PGHOST": "127.0.0.1", "PGPORT": fmt.Sprint(pg.Port), "PGUSER": pg.User,
		"PGPASSWORD": pg.Password, "PGDATABASE": "fromenv", "PGSSLMODE": "disable"} {
		t.Setenv(k, v)
	}
	s, err := store.CreateShared(context.Background(), store.Shared{CacheRoot: t.TempDir()}, store.Meta{Name: "envws"})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if m, err := s.Meta(context.Background()); err != nil || m.Name != "envws" {
		t.Fatalf("meta = %+v, %v", m, err)
	}
}
