package engine

import (
	"fmt"
	"os"
	"path/filepath"

	"github.com/openaml/terraform-provider-aml/internal/engine/store"
	"github.com/openaml/terraform-provider-aml/internal/engine/store/objstore"
)

// Backends of a workspace (aml_workspace.backend).
const (
	// BackendEmbedded keeps a workspace in a directory: SQLite and files.
	BackendEmbedded = "embedded"
	// BackendShared keeps it in PostgreSQL and an S3-compatible bucket, with a
	// cache on each machine.
	BackendShared = "shared"
)

// Backends lists the valid backends, the default first.
var Backends = []string{BackendEmbedded, BackendShared}

// SharedBackend is where shared workspaces live (the provider's
// shared_backend block). Empty fields come from the usual environment:
// PG* variables and ~/.pgpass for PostgreSQL, AWS_* variables and profiles
// for the bucket, AML_SECRETS_KEY for the secrets key.
type SharedBackend struct {
	Postgres   string
	S3         objstore.S3Config // Bucket "" keeps files in each machine's cache only
	SecretsKey string
	// CacheDir is this machine's cache of shared workspaces; default the user
	// cache directory's terraform-provider-aml/workspaces.
	CacheDir string
}

func (b *SharedBackend) config() (store.Shared, error) {
	cache := b.CacheDir
	if cache == "" {
		d, err := os.UserCacheDir()
		if err != nil {
			return store.Shared{}, fmt.Errorf("no cache directory for shared workspaces (set shared_backend.cache_dir): %w", err)
		}
		cache = filepath.Join(d, "terraform-provider-aml", "workspaces")
	}
	key := b.SecretsKey
	if key == "" {
		key = os.Getenv("AML_SECRETS_KEY")
	}
	return store.Shared{Postgres: b.Postgres, S3: b.S3, CacheRoot: cache, SecretsKey: key}, nil
}
