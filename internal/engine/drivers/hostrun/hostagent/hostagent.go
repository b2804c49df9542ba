// Package hostagent is the host side of every driver that reaches a machine
// through a command channel (SSH today): the engine stages its own binary on the
// host and runs `terraform-provider-aml agent <command>` there, with JSON on
// stdin and stdout. The commands reuse the local driver, so a remote run behaves
// exactly like a local one: same supervisor, same environments, same files.
package hostagent

import (
	"archive/tar"
	"bufio"
	"bytes"
	"compress/gzip"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/openaml/terraform-provider-aml/internal/engine/drivers"
	"github.com/openaml/terraform-provider-aml/internal/engine/drivers/hostrun"
	"github.com/openaml/terraform-provider-aml/internal/engine/drivers/hostrun/supervise"
	"github.com/openaml/terraform-provider-aml/internal/engine/env"
	"github.com/openaml/terraform-provider-aml/internal/engine/field"
	"github.com/openaml/terraform-provider-aml/internal/engine/run"
	"github.com/openaml/terraform-provider-aml/internal/engine/snapshot"
)

// Exit codes of host commands besides 0 and 1.
const (
	ExitUsage      = 2
	ExitFieldError = 3 // stdout holds a JSON FieldError
)

// Commands lists what Main understands (for usage text).
var Commands = []string{"probe", "prepare-env", "blobs-missing", "blobs-receive", "stage", "start", "status", "cancel", "logs", "collect", "pack", "ranks", "write-file", "spare-build", "push", "wait", "collect-pack"}

// Main runs one host command. args[0] is the command.
func Main(args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		fmt.Fprintf(stderr, "usage: agent {%s} ...\n", strings.Join(Commands, "|"))
		return ExitUsage
	}
	ctx := context.Background()
	err := runCommand(ctx, args[0], args[1:], stdin, stdout)
	var fe *field.Error
	switch {
	case err == nil:
		return 0
	case errors.As(err, &fe):
		_ = json.NewEncoder(stdout).Encode(fe)
		return ExitFieldError
	case errors.Is(err, errUsage):
		fmt.Fprintf(stderr, "agent %s: %v\n", args[0], err)
		return ExitUsage
	default:
		fmt.Fprintf(stderr, "agent %s: %v\n", args[0], err)
		return 1
	}
}

var errUsage = errors.New("bad usage")

func runCommand(ctx context.Context, cmd string, args []string, stdin io.Reader, stdout io.Writer) error {
	out := json.NewEncoder(stdout)
	switch cmd {
	case "probe":
		return out.Encode(hostrun.ProbeAttached(ctx))
	case "prepare-env":
		var e env.Environment
		if err := decodeInput(stdin, &e); err != nil {
			return err
		}
		launch, err := env.PrepareLocal(ctx, e, os.Getenv("PATH"))
		if err != nil {
			return err
		}
		return out.Encode(launch)
	case "blobs-missing":
		if len(args) != 1 && len(args) != 2 {
			return fmt.Errorf("%w: blobs-missing <blobs-root> [<save-manifest-to>] < manifest.json[.gz]", errUsage)
		}
		in, err := io.ReadAll(stdin)
		if err != nil {
			return err
		}
		var m snapshot.Manifest
		if err := decodeInput(bytes.NewReader(in), &m); err != nil {
			return fmt.Errorf("reading the manifest: %w", err)
		}
		if len(args) == 2 {
			// Kept, as it came (gzipped or not), for the `start` that
			// follows, so the manifest crosses the link once.
			if err := SaveManifest(args[1], in); err != nil {
				return err
			}
		}
		missing := snapshot.BlobStore{Root: args[0]}.Missing(&m)
		if missing == nil {
			missing = []string{}
		}
		return out.Encode(missing)
	case "blobs-receive":
		if len(args) != 1 {
			return fmt.Errorf("%w: blobs-receive <blobs-root> < blobs.tar.gz", errUsage)
		}
		n, err := ReceiveBlobs(snapshot.BlobStore{Root: args[0]}, stdin)
		if err != nil {
			return err
		}
		return out.Encode(map[string]int{"received": n})
	case "ranks":
		if len(args) != 2 {
			return fmt.Errorf("%w: ranks <run-dir> <count>", errUsage)
		}
		n, err := strconv.Atoi(args[1])
		if err != nil || n < 1 || n > 100000 {
			return fmt.Errorf("%w: count %q", errUsage, args[1])
		}
		states, err := supervise.RankStates(args[0], n)
		if err != nil {
			return err
		}
		return out.Encode(states)
	case "write-file":
		// write-file <path> <mode> < content: atomically, for a kind's own
		// files on the host (a batch script).
		if len(args) != 2 {
			return fmt.Errorf("%w: write-file <path> <octal-mode> < content", errUsage)
		}
		mode, err := strconv.ParseUint(args[1], 8, 32)
		if err != nil {
			return fmt.Errorf("%w: mode %q", errUsage, args[1])
		}
		b, err := readInput(stdin, 16<<20)
		if err != nil {
			return err
		}
		tmp := args[0] + ".tmp"
		if err := os.WriteFile(tmp, b, os.FileMode(mode)); err != nil {
			return err
		}
		return os.Rename(tmp, args[0])
	case "stage", "start":
		raw, err := readInput(stdin, 0)
		if err != nil {
			return err
		}
		req, manifestFile, err := DecodeStart(raw)
		return stageAndStart(ctx, cmd, req, manifestFile, err, stdout, false, "")
	case "push":
		// push <stage|start> <blobs-root> <save-manifest-to>: blobs-missing,
		// blobs-receive and stage/start in one session. Stdin: a decimal
		// length and a newline, that many bytes of a StartRequest with the
		// manifest inline (JSON, plain or gzipped), then a gzipped tar of
		// blobs (ReceiveBlobs). Stdout: {"missing": [...]} and a newline as
		// soon as the request is read, then what stage/start writes.
		if len(args) != 3 || (args[0] != "stage" && args[0] != "start") {
			return fmt.Errorf("%w: push <stage|start> <blobs-root> <save-manifest-to> < request", errUsage)
		}
		return push(ctx, args[0], snapshot.BlobStore{Root: args[1]}, args[2], stdin, stdout)
	case "status", "cancel", "logs", "collect", "wait", "collect-pack":
		ex, err := recoverFrom(stdin)
		if err != nil {
			return err
		}
		switch cmd {
		case "status":
			st, err := ex.Status(ctx)
			if err != nil {
				return err
			}
			return out.Encode(st)
		case "wait":
			// wait <max-seconds> < handle.json: the status once the run has
			// ended, or when max-seconds have passed, whichever is first
			// (the engine asks again). It learns of the end from the
			// supervisor's status file as it is written (see
			// hostrun's Wait), so the engine does not poll.
			// With a run directory, a terminal state is followed by what
			// collect-pack writes for it, in the same session; with a blobs
			// root too, the run's snapshot is in it by then (its spool,
			// if any, is stored first).
			if len(args) < 1 || len(args) > 3 {
				return fmt.Errorf("%w: wait <max-seconds> [<run-dir> [<blobs-root>]] < handle.json", errUsage)
			}
			secs, err := strconv.ParseFloat(args[0], 64)
			if err != nil || secs <= 0 || secs > 3600 {
				return fmt.Errorf("%w: max-seconds %q", errUsage, args[0])
			}
			wctx, cancel := context.WithTimeout(ctx, time.Duration(secs*float64(time.Second)))
			defer cancel()
			st, err := ex.Wait(wctx)
			if err != nil && wctx.Err() != nil {
				st, err = ex.Status(ctx) // the bound: how it is now
			}
			if err != nil {
				return err
			}
			if st.Status.Terminal() && len(args) == 3 {
				awaitSpools(snapshot.BlobStore{Root: args[2]}, filepath.Base(args[1])+"-", spoolWait)
			}
			if err := out.Encode(st); err != nil || len(args) == 1 || !st.Status.Terminal() {
				return err
			}
			return collectPack(ctx, ex, args[1], stdout)
		case "cancel":
			if len(args) != 2 {
				return fmt.Errorf("%w: cancel <grace-seconds> <reason> < handle.json", errUsage)
			}
			grace, err := strconv.ParseFloat(args[0], 64)
			if err != nil {
				return fmt.Errorf("%w: grace %q: %v", errUsage, args[0], err)
			}
			return ex.Cancel(ctx, time.Duration(grace*float64(time.Second)), args[1])
		case "logs":
			if len(args) != 1 {
				return fmt.Errorf("%w: logs <offset> < handle.json", errUsage)
			}
			off, err := strconv.ParseInt(args[0], 10, 64)
			if err != nil {
				return fmt.Errorf("%w: offset %q", errUsage, args[0])
			}
			b, _, err := ex.Logs(ctx, off)
			if err != nil {
				return err
			}
			_, err = stdout.Write(b)
			return err
		case "collect-pack":
			// collect-pack <run-dir> < handle.json: collect's answer on one
			// line, then what pack writes, in one session.
			if len(args) != 1 {
				return fmt.Errorf("%w: collect-pack <run-dir> < handle.json", errUsage)
			}
			return collectPack(ctx, ex, args[0], stdout)
		default: // collect
			c, err := ex.Collect(ctx)
			if err != nil {
				return err
			}
			return out.Encode(c)
		}
	case "spare-build":
		// spare-build <blobs-root> <spares-root> <manifest-file> [<spool>]:
		// started detached by stage/start; stores the spool's blobs first
		// (and removes it), removes the manifest file when done.
		if len(args) != 3 && len(args) != 4 {
			return fmt.Errorf("%w: spare-build <blobs-root> <spares-root> <manifest-file> [<spool>]", errUsage)
		}
		defer os.Remove(args[2])
		// Behind the run it follows, which is what the host is for.
		_ = syscall.Setpriority(syscall.PRIO_PROCESS, 0, 10)
		if len(args) == 4 {
			storeSpool(snapshot.BlobStore{Root: args[0]}, args[3])
		}
		m, err := LoadManifest(args[2])
		if err != nil {
			return err
		}
		return snapshot.BlobStore{Root: args[0]}.BuildSpare(ctx, m, args[1])
	case "pack":
		if len(args) != 1 {
			return fmt.Errorf("%w: pack <run-dir>", errUsage)
		}
		return Pack(args[0], stdout)
	default:
		return fmt.Errorf("%w: unknown command %q (want one of %s)", errUsage, cmd, strings.Join(Commands, ", "))
	}
}

// collectPack writes collect's answer on one line, then what Pack writes.
func collectPack(ctx context.Context, ex drivers.Execution, runDir string, stdout io.Writer) error {
	c, err := ex.Collect(ctx)
	if err != nil {
		return err
	}
	if err := json.NewEncoder(stdout).Encode(c); err != nil {
		return err
	}
	return Pack(runDir, stdout)
}

// pushRequestMax bounds a push request's header (a manifest of 2,000 files is
// about 300 KB of JSON before gzip).
const pushRequestMax = 256 << 20

// PushReply is the first line a push writes.
type PushReply struct {
	Missing []string `json:"missing"`
}

func push(ctx context.Context, cmd string, blobs snapshot.BlobStore, manifestFile string, stdin io.Reader, stdout io.Writer) error {
	br := bufio.NewReaderSize(stdin, 64<<10)
	line, err := br.ReadString('\n')
	if err != nil {
		return fmt.Errorf("reading the push request: %w", err)
	}
	n, err := strconv.ParseInt(strings.TrimSpace(line), 10, 64)
	if err != nil || n <= 0 || n > pushRequestMax {
		return fmt.Errorf("%w: push request length %q", errUsage, strings.TrimSpace(line))
	}
	head := make([]byte, n)
	if _, err := io.ReadFull(br, head); err != nil {
		return fmt.Errorf("reading the push request: %w", err)
	}
	raw, err := readInput(bytes.NewReader(head), 0)
	if err != nil {
		return err
	}
	req, _, err := DecodeStart(raw)
	if err != nil {
		return err
	}
	if req.Manifest == nil {
		return errors.New("the push request has no manifest")
	}
	// Blobs an earlier push spooled are stored first (the background builder
	// may not have got to them yet), so they are not asked for again.
	settleSpools(blobs, "")
	missing := blobs.Missing(req.Manifest)
	if missing == nil {
		missing = []string{}
	}
	if err := json.NewEncoder(stdout).Encode(PushReply{Missing: missing}); err != nil {
		return err
	}
	// Kept for the spare tree's builder.
	mraw, err := json.Marshal(req.Manifest)
	if err != nil {
		return err
	}
	if err := SaveManifest(manifestFile, mraw); err != nil {
		return err
	}
	// Most of the snapshot is coming (a first run here): the run directory
	// is written as the blobs arrive, from the same bytes, instead of read
	// back from the store afterwards. Otherwise a spare tree, patched, is
	// cheaper (Stage).
	var tree *snapshot.Tree
	if streamTree(req.Manifest, len(missing)) {
		if tree, err = blobs.NewTree(req.Manifest, req.RunDir); err != nil {
			os.Remove(manifestFile)
			return fmt.Errorf("staging snapshot: %w", err)
		}
	}
	// The tree's blobs go to one spool file, stored in the background after
	// the launch (spare-build), not one file each while the run waits.
	var (
		spool   string
		spoolW  io.Writer
		spoolBW *bufio.Writer
		spoolF  *os.File
	)
	if tree != nil {
		if err := os.MkdirAll(filepath.Join(blobs.Root, "spool"), 0o755); err == nil {
			// ".part" until it is complete: settleSpools leaves it alone.
			if spoolF, err = os.CreateTemp(filepath.Join(blobs.Root, "spool"), req.RunID+"-*.tar.part"); err == nil {
				spool, spoolBW = spoolF.Name(), bufio.NewWriterSize(spoolF, 256<<10)
				spoolW = spoolBW
			}
		}
	}
	fail := func(err error) error {
		os.Remove(manifestFile)
		if tree != nil {
			_ = os.RemoveAll(req.RunDir)
		}
		if spoolF != nil {
			spoolF.Close()
		}
		storeSpool(blobs, spool) // what came is kept
		return err
	}
	got, err := ReceiveBlobsTo(blobs, br, tree, spoolW)
	if err == nil && spoolF != nil {
		err = spoolBW.Flush()
		if cerr := spoolF.Close(); err == nil {
			err = cerr
		}
		spoolF = nil
		if err == nil {
			part := spool
			spool = strings.TrimSuffix(part, ".part")
			if err = os.Rename(part, spool); err != nil {
				spool = part
			}
		}
	}
	if err != nil {
		return fail(fmt.Errorf("receiving %d file(s) of the snapshot: %w", len(missing), err))
	}
	if got < len(missing) {
		return fail(fmt.Errorf("receiving the snapshot: %d of %d missing file(s) arrived", got, len(missing)))
	}
	// The engine says when the run may be launched (it has stored the
	// snapshot and recorded the run); without that line nothing is.
	if line, err := br.ReadString('\n'); err != nil || strings.TrimSpace(line) != PushGo {
		return fail(fmt.Errorf("the push was not confirmed (%q, %v): nothing was launched", strings.TrimSpace(line), err))
	}
	if tree != nil {
		if err := tree.Finish(ctx); err != nil {
			return fail(fmt.Errorf("staging snapshot: %w", err))
		}
		req.Materialized = true
	}
	req.BlobsRoot = blobs.Root
	return stageAndStart(ctx, cmd, req, manifestFile, nil, stdout, true, spool)
}

// settleSpools stores the blobs of the spool files of b whose names start
// with prefix ("": all), which the spare tree's builder may be storing at the
// same time (storing a blob twice is harmless).
func settleSpools(b snapshot.BlobStore, prefix string) {
	names, _ := filepath.Glob(filepath.Join(b.Root, "spool", prefix+"*.tar"))
	for _, n := range names {
		storeSpool(b, n)
	}
}

// awaitSpools waits, up to max, for the spare tree's builder to store the
// spools settleSpools(b, prefix) would, then stores what is left itself (the
// builder may be gone): storing them at the same time would do it twice.
func awaitSpools(b snapshot.BlobStore, prefix string, max time.Duration) {
	deadline := time.Now().Add(max)
	for time.Now().Before(deadline) {
		names, _ := filepath.Glob(filepath.Join(b.Root, "spool", prefix+"*.tar"))
		if len(names) == 0 {
			return
		}
		time.Sleep(20 * time.Millisecond)
	}
	settleSpools(b, prefix)
}

// spoolWait bounds how long a wait leaves a run's spool to the builder.
const spoolWait = 30 * time.Second

// storeSpool stores the blobs of a spool file (ReceiveBlobsTo) and removes
// it. A spool that cannot be read costs its blobs being sent again.
func storeSpool(blobs snapshot.BlobStore, spool string) {
	if spool == "" {
		return
	}
	defer os.Remove(spool)
	f, err := os.Open(spool)
	if err != nil {
		return
	}
	defer f.Close()
	_, _ = ReceiveTar(blobs, f)
}

// PushGo is the line that ends a push's input: the engine is ready for the
// run to be launched.
const PushGo = "go"

// streamTree says whether a push writes the run directory as the blobs
// arrive: when at least half of the snapshot's contents are missing here.
func streamTree(m *snapshot.Manifest, missing int) bool {
	distinct := map[string]bool{}
	for _, e := range m.Entries {
		if e.Mode != snapshot.ModeSymlink {
			distinct[e.SHA256] = true
		}
	}
	return missing > 0 && 2*missing >= len(distinct)
}

// stageAndStart is stage/start of a decoded request (decodeErr: DecodeStart's
// error); manifestFile, if any, is removed unless a spare tree's builder
// takes it over. Start writes the run's handle on one line and, withState,
// the run's state as seen right after the launch on the next (what a status
// would answer then). The blobs of spool, if any, are stored by the spare
// tree's builder before it builds, or here, once the rest is done.
func stageAndStart(ctx context.Context, cmd string, req hostrun.StageRequest, manifestFile string, decodeErr error, stdout io.Writer, withState bool, spool string) error {
	defer func() {
		// Used once: staged or not, a retry sends it again. A spare
		// tree's builder takes it over (and removes it).
		if manifestFile != "" {
			os.Remove(manifestFile)
		}
		storeSpool(snapshot.BlobStore{Root: req.BlobsRoot}, spool)
	}()
	if decodeErr != nil {
		return decodeErr
	}
	if err := hostrun.Stage(ctx, req); err != nil {
		return err
	}
	if req.SpareRoot != "" {
		// The next run's tree, built in the background (a failure
		// costs that run a full materialization, nothing else).
		tookManifest, tookSpool := spawnSpareBuilder(req, manifestFile, spool)
		if tookManifest {
			manifestFile = ""
		}
		if tookSpool {
			spool = ""
		}
	}
	if cmd == "stage" { // launched by someone else (a batch system)
		_, err := stdout.Write([]byte("{}\n"))
		return err
	}
	exe, err := os.Executable()
	if err != nil {
		return err
	}
	h, err := hostrun.Launch([]string{exe, "agent"}, req.RunDir)
	if err != nil {
		return err
	}
	out := append(h, '\n')
	if withState {
		if ex, err := hostrun.Recover(h); err == nil {
			if st, err := ex.Status(ctx); err == nil {
				if b, err := json.Marshal(st); err == nil {
					out = append(append(out, b...), '\n')
				}
			}
		}
	}
	_, err = stdout.Write(out)
	return err
}

// spawnSpareBuilder starts `agent spare-build` detached (its own session, no
// stdio of this command, so the SSH session ends without it) for the run's
// manifest: manifestFile, which the builder then removes, or, when the
// manifest came inline, a copy saved under the spares root; and, first, the
// blobs of spool (if any). It reports whether the builder took manifestFile
// and spool over.
func spawnSpareBuilder(req hostrun.StageRequest, manifestFile, spool string) (tookManifest, tookSpool bool) {
	exe, err := os.Executable()
	if err != nil {
		return false, false
	}
	if err := os.MkdirAll(req.SpareRoot, 0o700); err != nil {
		return false, false
	}
	own := manifestFile
	if own == "" {
		raw, err := json.Marshal(req.Manifest)
		if err != nil {
			return false, false
		}
		own = filepath.Join(req.SpareRoot, req.RunID+".manifest")
		if err := SaveManifest(own, raw); err != nil {
			return false, false
		}
	}
	logPath := filepath.Join(req.SpareRoot, "builder.log")
	if st, err := os.Stat(logPath); err == nil && st.Size() > 1<<20 {
		_ = os.Remove(logPath)
	}
	log, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return false, false
	}
	defer log.Close()
	args := []string{"agent", "spare-build", req.BlobsRoot, req.SpareRoot, own}
	if spool != "" {
		args = append(args, spool)
	}
	cmd := exec.Command(exe, args...)
	cmd.Dir = req.SpareRoot
	cmd.Stdout, cmd.Stderr = log, log
	cmd.Env = append(os.Environ(), "AML_AGENT=1")
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	if err := cmd.Start(); err != nil {
		if own != manifestFile {
			os.Remove(own)
		}
		return false, false
	}
	_ = cmd.Process.Release()
	return manifestFile != "", spool != ""
}

func recoverFrom(stdin io.Reader) (drivers.Execution, error) {
	raw, err := readInput(stdin, 1<<20)
	if err != nil {
		return nil, err
	}
	return hostrun.Recover(raw)
}

// ReceiveBlobs stores every entry of a gzipped tar whose names are sha256 hex
// values, verifying each on arrival. It returns how many it stored. Small
// blobs are stored by a few workers while the archive is read on (storing a
// file is mostly waiting for the file system); large ones as they are read.
func ReceiveBlobs(b snapshot.BlobStore, r io.Reader) (int, error) {
	return ReceiveBlobsTo(b, r, nil, nil)
}

// ReceiveBlobsTo is ReceiveBlobs that also hands each small blob, from
// memory, to tree (when not nil) to write the files it is the content of.
// With a spool, small blobs are not stored but appended to it (one file, as
// an uncompressed tar that ReceiveTar stores later); large ones are still
// stored as they are read. It reads r up to the end of the gzip stream and no
// further when r is a *bufio.Reader (what follows is the caller's). It returns
// how many blobs it stored or spooled.
func ReceiveBlobsTo(b snapshot.BlobStore, r io.Reader, tree *snapshot.Tree, spool io.Writer) (int, error) {
	zr, err := gzip.NewReader(bufio.NewReader(r))
	if err != nil {
		return 0, err
	}
	zr.Multistream(false)
	n, err := receiveTar(b, tar.NewReader(zr), tree, spool)
	if err == nil {
		// The gzip trailer (checked), and nothing after it.
		_, err = io.Copy(io.Discard, zr)
	}
	return n, err
}

// ReceiveTar stores the blobs of an uncompressed tar (a spool that
// ReceiveBlobsTo wrote), verifying each.
func ReceiveTar(b snapshot.BlobStore, r io.Reader) (int, error) {
	return receiveTar(b, tar.NewReader(bufio.NewReader(r)), nil, nil)
}

func receiveTar(b snapshot.BlobStore, tr *tar.Reader, tree *snapshot.Tree, spool io.Writer) (int, error) {
	var sw *tar.Writer
	if spool != nil {
		sw = tar.NewWriter(spool)
	}
	type blob struct {
		name string
		data []byte
	}
	work := make(chan blob, 2*receiveWorkers)
	var (
		mu       sync.Mutex
		firstErr error
		stored   int
		wg       sync.WaitGroup
	)
	fail := func(err error) {
		mu.Lock()
		if firstErr == nil {
			firstErr = err
		}
		mu.Unlock()
	}
	failed := func() bool {
		mu.Lock()
		defer mu.Unlock()
		return firstErr != nil
	}
	count := func() {
		mu.Lock()
		stored++
		mu.Unlock()
	}
	for range receiveWorkers {
		wg.Go(func() {
			for bl := range work {
				if sw == nil {
					if err := b.Put(bl.name, bytes.NewReader(bl.data)); err != nil {
						fail(err)
						continue
					}
				}
				if tree != nil {
					// Verified by the tree itself (the store may have had it,
					// or it went to the spool).
					if err := tree.Put(bl.name, bl.data); err != nil {
						fail(err)
						continue
					}
				}
				if sw == nil {
					count()
				}
			}
		})
	}
	readErr := func() error {
		for !failed() {
			h, err := tr.Next()
			if errors.Is(err, io.EOF) {
				return nil
			}
			if err != nil {
				return err
			}
			if h.Typeflag != tar.TypeReg {
				return fmt.Errorf("blob archive entry %q is not a regular file", h.Name)
			}
			if h.Size > receiveInMemoryMax {
				if err := b.Put(h.Name, tr); err != nil {
					return err
				}
				count()
				continue
			}
			if sw != nil && !snapshot.ValidSHA(h.Name) {
				return fmt.Errorf("snapshot: invalid blob name %q", h.Name)
			}
			data := make([]byte, h.Size)
			if _, err := io.ReadFull(tr, data); err != nil {
				return err
			}
			if sw != nil {
				// Appended as it came; stored (and verified) later.
				if err := sw.WriteHeader(&tar.Header{Name: h.Name, Mode: 0o444, Size: h.Size, Typeflag: tar.TypeReg}); err != nil {
					return err
				}
				if _, err := sw.Write(data); err != nil {
					return err
				}
				count()
			}
			work <- blob{h.Name, data}
		}
		return nil
	}()
	close(work)
	wg.Wait()
	if readErr == nil && sw != nil {
		readErr = sw.Close()
	}
	if readErr != nil {
		fail(readErr)
	}
	return stored, firstErr
}

// receiveWorkers store received blobs at the same time; receiveInMemoryMax is
// the largest blob handed to them (larger ones are stored as they are read).
const (
	receiveWorkers     = 8
	receiveInMemoryMax = 1 << 20
)

// SendBlobs writes the named blobs of b as a gzipped tar (the other side of
// ReceiveBlobs).
func SendBlobs(b snapshot.BlobStore, shas []string, w io.Writer) error {
	zw, _ := gzip.NewWriterLevel(w, gzip.BestSpeed)
	tw := tar.NewWriter(zw)
	for _, sha := range shas {
		f, err := os.Open(b.Path(sha))
		if err != nil {
			return err
		}
		st, err := f.Stat()
		if err == nil {
			err = tw.WriteHeader(&tar.Header{Name: sha, Mode: 0o444, Size: st.Size(), Typeflag: tar.TypeReg})
		}
		if err == nil {
			_, err = io.Copy(tw, f)
		}
		f.Close()
		if err != nil {
			return err
		}
	}
	if err := tw.Close(); err != nil {
		return err
	}
	return zw.Close()
}

// SendSourceBlobs is SendBlobs reading each blob from the file of m that has
// it in the source directory dir, verified against its sha256 as it is sent:
// a file that no longer matches ends the archive with an error wrapping
// snapshot.ErrSourceChanged (the receiver, which verifies every blob, stores
// none of it).
func SendSourceBlobs(dir string, m *snapshot.Manifest, shas []string, w io.Writer) error {
	from := make(map[string]string, len(m.Entries))
	for _, e := range m.Entries {
		if _, ok := from[e.SHA256]; !ok && e.Mode != snapshot.ModeSymlink {
			from[e.SHA256] = e.Path
		}
	}
	zw, _ := gzip.NewWriterLevel(w, gzip.BestSpeed)
	tw := tar.NewWriter(zw)
	var buf []byte
	for _, sha := range shas {
		rel, ok := from[sha]
		if !ok {
			return fmt.Errorf("blob %s is not in the snapshot", sha)
		}
		rel, err := snapshot.SanitizeRelPath(rel)
		if err != nil {
			return fmt.Errorf("snapshot: manifest entry: %w", err)
		}
		changed := func(err error) error {
			if err != nil {
				return fmt.Errorf("snapshot: %s: %w: %w", rel, snapshot.ErrSourceChanged, err)
			}
			return fmt.Errorf("snapshot: %s: %w", rel, snapshot.ErrSourceChanged)
		}
		f, err := os.Open(filepath.Join(dir, filepath.FromSlash(rel)))
		if err != nil {
			return changed(err)
		}
		err = func() error {
			defer f.Close()
			st, err := f.Stat()
			if err != nil {
				return changed(err)
			}
			if !st.Mode().IsRegular() {
				return changed(nil)
			}
			size := st.Size()
			h := sha256.New()
			if size <= receiveInMemoryMax {
				// Read whole and checked before anything is sent.
				if int64(cap(buf)) < size+1 {
					buf = make([]byte, size+1)
				}
				n, err := io.ReadFull(f, buf[:size+1])
				if int64(n) != size || (err != io.ErrUnexpectedEOF && err != io.EOF) {
					return changed(nil)
				}
				h.Write(buf[:n])
				if hex.EncodeToString(h.Sum(nil)) != sha {
					return changed(nil)
				}
				if err := tw.WriteHeader(&tar.Header{Name: sha, Mode: 0o444, Size: size, Typeflag: tar.TypeReg}); err != nil {
					return err
				}
				_, err = tw.Write(buf[:n])
				return err
			}
			if err := tw.WriteHeader(&tar.Header{Name: sha, Mode: 0o444, Size: size, Typeflag: tar.TypeReg}); err != nil {
				return err
			}
			if _, err := io.CopyN(io.MultiWriter(tw, h), f, size); err != nil {
				return changed(err)
			}
			if hex.EncodeToString(h.Sum(nil)) != sha {
				return changed(nil)
			}
			return nil
		}()
		if err != nil {
			return err
		}
	}
	if err := tw.Close(); err != nil {
		return err
	}
	return zw.Close()
}

// Pack writes a run's outputs/ and logs/ as a gzipped tar: directories and
// regular files only (links are left out).
func Pack(runDir string, w io.Writer) error {
	zw, _ := gzip.NewWriterLevel(w, gzip.BestSpeed)
	tw := tar.NewWriter(zw)
	// The log first: when a collection limit cuts the archive, the log is
	// what explains the run.
	for _, top := range []string{supervise.LogsDir, supervise.OutputsDir} {
		root := filepath.Join(runDir, top)
		err := filepath.WalkDir(root, func(p string, de fs.DirEntry, err error) error {
			if err != nil {
				if errors.Is(err, fs.ErrNotExist) && p == root {
					return nil
				}
				return err
			}
			rel, err := filepath.Rel(runDir, p)
			if err != nil {
				return err
			}
			info, err := de.Info()
			if err != nil {
				return err
			}
			switch {
			case de.IsDir():
				return tw.WriteHeader(&tar.Header{Name: filepath.ToSlash(rel) + "/", Mode: 0o755, Typeflag: tar.TypeDir, ModTime: info.ModTime()})
			case de.Type().IsRegular(), de.Type()&fs.ModeSymlink != 0:
				// Opened beneath the directory, regular files only, never
				// blocking: a link inside goes as a copy of its file, a FIFO,
				// a device or a link out is left on the host.
				f, err := run.OpenRunFile(root, p)
				if err != nil {
					return nil
				}
				defer f.Close()
				if info, err = f.Stat(); err != nil {
					return err
				}
				if err := tw.WriteHeader(&tar.Header{Name: filepath.ToSlash(rel), Mode: int64(info.Mode().Perm()), Size: info.Size(), Typeflag: tar.TypeReg, ModTime: info.ModTime()}); err != nil {
					return err
				}
				_, err = io.CopyN(tw, f, info.Size())
				return err
			default:
				return nil
			}
		})
		if err != nil {
			return err
		}
	}
	if err := tw.Close(); err != nil {
		return err
	}
	return zw.Close()
}

// Unpack extracts what Pack wrote into dest, refusing anything a hostile host
// could use to escape dest: absolute paths, "..", links, devices; and bounding
// the total size.
// LimitError is Unpack reaching its size limit: the files before At were
// written, At and the rest were not.
type LimitError struct {
	Max int64
	At  string
}

func (e *LimitError) Error() string {
	return fmt.Sprintf("outputs and logs are larger than the collection limit of %d bytes (stopped at %s)", e.Max, e.At)
}

func Unpack(r io.Reader, dest string, maxBytes int64) error {
	zr, err := gzip.NewReader(r)
	if err != nil {
		return fmt.Errorf("reading outputs archive: %w", err)
	}
	tr := tar.NewReader(zr)
	var total int64
	for {
		h, err := tr.Next()
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			return fmt.Errorf("reading outputs archive: %w", err)
		}
		rel, err := snapshot.SanitizeRelPath(strings.TrimSuffix(h.Name, "/"))
		if err != nil {
			return fmt.Errorf("outputs archive entry %q refused: %w", h.Name, err)
		}
		if top, _, _ := strings.Cut(rel, "/"); top != supervise.OutputsDir && top != supervise.LogsDir {
			return fmt.Errorf("outputs archive entry %q refused: only outputs/ and logs/ come back", h.Name)
		}
		p := filepath.Join(dest, filepath.FromSlash(rel))
		if err := noLinkOnPath(dest, rel); err != nil {
			return err
		}
		switch h.Typeflag {
		case tar.TypeDir:
			if err := os.MkdirAll(p, 0o755); err != nil {
				return err
			}
		case tar.TypeReg:
			total += h.Size
			if maxBytes > 0 && total > maxBytes {
				// What came before stays; this file and the rest do not come.
				return &LimitError{Max: maxBytes, At: rel}
			}
			if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
				return err
			}
			mode := os.FileMode(0o644)
			if h.Mode&0o111 != 0 {
				mode = 0o755
			}
			f, err := os.OpenFile(p, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, mode)
			if err != nil {
				return err
			}
			_, err = io.CopyN(f, tr, h.Size)
			if cerr := f.Close(); err == nil {
				err = cerr
			}
			if err != nil {
				return err
			}
		default:
			return fmt.Errorf("outputs archive entry %q refused: type %q is not a file or directory", h.Name, string(h.Typeflag))
		}
	}
}

// noLinkOnPath refuses a path whose existing parents include a symlink, so an
// entry cannot be written through one.
func noLinkOnPath(dest, rel string) error {
	p := dest
	for _, part := range strings.Split(rel, "/") {
		p = filepath.Join(p, part)
		st, err := os.Lstat(p)
		if errors.Is(err, fs.ErrNotExist) {
			return nil
		}
		if err != nil {
			return err
		}
		if st.Mode()&fs.ModeSymlink != 0 {
			return fmt.Errorf("outputs archive entry %q refused: %s is a symlink", rel, p)
		}
	}
	return nil
}
