package env_test

import (
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/openaml/terraform-provider-aml/internal/engine/env"
	dockertest "github.com/openaml/terraform-provider-aml/internal/testutil/docker"
)

func pinned(base string, pkgs ...string) env.Environment {
	return env.Environment{
		Docker: &env.Docker{Enabled: true, BaseImage: base},
		Python: &env.Python{Conda: &env.CondaDependencies{PipPackages: pkgs}},
	}
}

// Images of system-managed Docker environments, built for real by the private
// engine with a package from the package index: built once per environment
// key and tagged by it, reused, rebuilt for a changed pin, never tagged when
// the build fails.
func TestImageCacheRealEngine(t *testing.T) {
	eng := dockertest.Shared(t)
	cli, err := env.FindDocker(os.Getenv("PATH"))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	cache := env.ImageCache{Root: filepath.Join(t.TempDir(), "envs"), Docker: cli}

	var log bytes.Buffer
	first, tag, err := cache.Ensure(ctx, pinned(eng.BaseImage, "six==1.16.0"), &log)
	if err != nil {
		t.Fatalf("first build: %v\n%s", err, log.String())
	}
	if first.CacheHit || first.BuildSeconds <= 0 || !eng.ImageExists(tag) || !strings.HasPrefix(tag, env.ImageRepository+":") {
		t.Fatalf("first build %+v, tag %q (exists %v)", first, tag, eng.ImageExists(tag))
	}
	if out, err := eng.Docker(ctx, "run", "--rm", tag, env.ImagePython, "-c", "import six; print(six.__version__)"); err != nil || out != "1.16.0" {
		t.Fatalf("six in the built image: %q, %v", out, err)
	}
	if out, err := eng.Docker(ctx, "run", "--rm", tag, "cat", "/opt/aml/packages.txt"); err != nil || !strings.Contains(out, "six==1.16.0") {
		t.Errorf("packages.txt in the image: %q, %v", out, err)
	}

	again, tag2, err := cache.Ensure(ctx, pinned(eng.BaseImage, "six==1.16.0"), &log)
	if err != nil || !again.CacheHit || again.BuildSeconds != 0 || tag2 != tag || again.Key != first.Key {
		t.Fatalf("second Ensure: %+v %q, %v; want a cache hit of %q", again, tag2, err, tag)
	}

	changed, tag3, err := cache.Ensure(ctx, pinned(eng.BaseImage, "six==1.15.0"), &log)
	if err != nil || changed.CacheHit || tag3 == tag {
		t.Fatalf("changed pin: %+v %q, %v; want a new build", changed, tag3, err)
	}

	before := eng.Images(t, env.ImageRepository)
	log.Reset()
	_, _, err = cache.Ensure(ctx, pinned(eng.BaseImage, "aml-no-such-package-for-tests==0.0.1"), &log)
	var be *env.BuildError
	if !errors.As(err, &be) || !strings.Contains(err.Error(), "No matching distribution found for aml-no-such-package-for-tests") {
		t.Fatalf("failing build: %v; want a BuildError with pip's message", err)
	}
	if after := eng.Images(t, env.ImageRepository); !slices.Equal(after, before) {
		t.Errorf("a failed build changed the tagged images: %v -> %v", before, after)
	}
}
