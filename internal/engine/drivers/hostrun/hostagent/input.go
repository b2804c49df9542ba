package hostagent

import (
	"bufio"
	"bytes"
	"compress/gzip"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"time"

	"github.com/openaml/terraform-provider-aml/internal/engine/drivers/hostrun"
	"github.com/openaml/terraform-provider-aml/internal/engine/snapshot"
)

// CompressAbove is the size from which EncodeInput gzips a request.
const CompressAbove = 1024

// gzipMagic opens every gzip stream. A JSON text never starts with it, so
// commands accept their JSON stdin either plain or gzipped.
var gzipMagic = []byte{0x1f, 0x8b}

// EncodeInput is a command's JSON stdin as the engine sends it: v as JSON,
// gzipped when that is larger than CompressAbove.
func EncodeInput(v any) ([]byte, error) {
	b, err := json.Marshal(v)
	if err != nil || len(b) <= CompressAbove {
		return b, err
	}
	var buf bytes.Buffer
	buf.Grow(len(b) / 2)
	zw, _ := gzip.NewWriterLevel(&buf, gzip.DefaultCompression)
	if _, err := zw.Write(b); err != nil {
		return nil, err
	}
	if err := zw.Close(); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}

// inputReader returns r's content, decompressed when it starts with the gzip
// magic bytes.
func inputReader(r io.Reader) (io.Reader, error) {
	br := bufio.NewReader(r)
	if head, err := br.Peek(len(gzipMagic)); err == nil && bytes.Equal(head, gzipMagic) {
		zr, err := gzip.NewReader(br)
		if err != nil {
			return nil, fmt.Errorf("reading gzipped input: %w", err)
		}
		return zr, nil
	}
	return br, nil
}

// readInput reads all of r (plain or gzipped), at most limit bytes after
// decompression when limit > 0.
func readInput(r io.Reader, limit int64) ([]byte, error) {
	in, err := inputReader(r)
	if err != nil {
		return nil, err
	}
	if limit > 0 {
		in = io.LimitReader(in, limit)
	}
	b, err := io.ReadAll(in)
	if err != nil {
		return nil, fmt.Errorf("reading input: %w", err)
	}
	return b, nil
}

// decodeInput decodes one JSON value from r (plain or gzipped).
func decodeInput(r io.Reader, v any) error {
	in, err := inputReader(r)
	if err != nil {
		return err
	}
	return json.NewDecoder(in).Decode(v)
}

// StartRequest is the stdin of `agent start`: a stage request whose manifest is
// either inline or in ManifestFile, a file on the host that an earlier
// `blobs-missing <blobs-root> <file>` saved (so the manifest crosses the link
// once per run). `start` removes that file. A bare hostrun.StageRequest is
// accepted too.
type StartRequest struct {
	Stage *hostrun.StageRequest `json:"stage"`
	// ManifestFile, when set, is where the host finds Stage.Manifest, which is
	// then left out.
	ManifestFile string `json:"manifest_file,omitempty"`
}

// DecodeStart reads a StartRequest (or a bare StageRequest) and returns the
// stage request with its manifest loaded, and the manifest file it named, if
// any (returned even with an error, so the caller can remove it).
func DecodeStart(raw []byte) (hostrun.StageRequest, string, error) {
	var w StartRequest
	if err := json.Unmarshal(raw, &w); err != nil {
		return hostrun.StageRequest{}, "", fmt.Errorf("reading the start request: %w", err)
	}
	if w.Stage == nil {
		var req hostrun.StageRequest
		if err := json.Unmarshal(raw, &req); err != nil {
			return req, "", fmt.Errorf("reading the start request: %w", err)
		}
		if req.Manifest == nil {
			return req, "", errors.New("the start request has no manifest")
		}
		return req, "", nil
	}
	req := *w.Stage
	switch {
	case w.ManifestFile != "" && req.Manifest != nil:
		return req, w.ManifestFile, errors.New("the start request has both a manifest and a manifest file")
	case w.ManifestFile != "":
		m, err := LoadManifest(w.ManifestFile)
		if err != nil {
			return req, w.ManifestFile, err
		}
		req.Manifest = m
	case req.Manifest == nil:
		return req, "", errors.New("the start request has no manifest")
	}
	return req, w.ManifestFile, nil
}

// manifestMaxAge is how long a saved manifest that no `start` used (the run's
// upload failed, or the engine went away) stays before a later save removes it.
const manifestMaxAge = 24 * time.Hour

// SaveManifest writes a manifest's JSON (plain or gzipped, as it came) to p
// atomically (a temporary file beside it, renamed), creating its directory,
// and removes files in that directory older than a day: manifests that no
// `start` consumed.
func SaveManifest(p string, raw []byte) error {
	dir := filepath.Dir(p)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return fmt.Errorf("saving the manifest: %w", err)
	}
	pruneOld(dir, manifestMaxAge)
	f, err := os.CreateTemp(dir, ".tmp-*")
	if err != nil {
		return fmt.Errorf("saving the manifest: %w", err)
	}
	_, err = f.Write(raw)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(f.Name(), p)
	}
	if err != nil {
		os.Remove(f.Name())
		return fmt.Errorf("saving the manifest: %w", err)
	}
	return nil
}

// LoadManifest reads a manifest SaveManifest wrote (plain or gzipped JSON).
func LoadManifest(p string) (*snapshot.Manifest, error) {
	f, err := os.Open(p)
	if err != nil {
		return nil, fmt.Errorf("loading the run's manifest: %w", err)
	}
	defer f.Close()
	var m snapshot.Manifest
	if err := decodeInput(f, &m); err != nil {
		return nil, fmt.Errorf("loading the run's manifest %s: %w", p, err)
	}
	return &m, nil
}

// pruneOld removes, best effort, the regular files in dir last modified more
// than maxAge ago.
func pruneOld(dir string, maxAge time.Duration) {
	des, err := os.ReadDir(dir)
	if err != nil {
		return
	}
	cutoff := time.Now().Add(-maxAge)
	for _, de := range des {
		if !de.Type().IsRegular() {
			continue
		}
		if info, err := de.Info(); err == nil && info.ModTime().Before(cutoff) {
			os.Remove(filepath.Join(dir, de.Name()))
		}
	}
}
