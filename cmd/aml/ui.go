package main

import (
	"context"
	"embed"
	"errors"
	"flag"
	"fmt"
	"io/fs"
	"mime"
	"net"
	"net/http"
	"os"
	"path"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/openaml/terraform-provider-aml/internal/engine"
	"github.com/openaml/terraform-provider-aml/internal/engine/run"
)

// The web view's assets are embedded: plain HTML, CSS and JavaScript (SVG
// charts), no build step.
//
//go:embed ui
var uiFiles embed.FS

// maxOverlay bounds how many runs of one experiment a run page overlays.
const maxOverlay = 10

func (c *cli) ui(ctx context.Context, args []string) error {
	var listen string
	var public bool
	f, _, err := c.start(ctx, "ui", args, 0, func(fs *flag.FlagSet) {
		fs.StringVar(&listen, "listen", "127.0.0.1:8765", "address to serve on (loopback unless --public)")
		fs.BoolVar(&public, "public", false, "allow an address other than loopback (anyone who can reach it sees the workspace)")
	})
	if err != nil {
		return err
	}
	defer f.Close()
	host, _, err := net.SplitHostPort(listen)
	if err != nil {
		return usageErr("--listen %s: %v", listen, err)
	}
	if !public && !isLoopback(host) {
		return usageErr("--listen %s: not a loopback address; the view has no login, pass --public to serve it beyond this machine", listen)
	}
	ln, err := net.Listen("tcp", listen)
	if err != nil {
		return err
	}
	srv := &http.Server{Handler: newUI(f.eng, f.ws, public), ReadHeaderTimeout: 10 * time.Second}
	fmt.Fprintf(c.stdout, "aml ui: workspace %s (%s) at http://%s/\n", run.SanitizeText(f.ws.Name), f.ws.ID, ln.Addr())
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(ln) }()
	select {
	case err := <-errc:
		return err
	case <-ctx.Done():
	}
	sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	_ = srv.Shutdown(sctx)
	return nil
}

func isLoopback(host string) bool {
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

// uiServer serves the view of one workspace, read-only.
type uiServer struct {
	eng    *engine.Engine
	ws     *engine.Workspace
	public bool
	mux    *http.ServeMux
}

func newUI(eng *engine.Engine, ws *engine.Workspace, public bool) http.Handler {
	s := &uiServer{eng: eng, ws: ws, public: public, mux: http.NewServeMux()}
	static, _ := fs.Sub(uiFiles, "ui")
	files := http.FileServerFS(static)
	s.mux.Handle("GET /static/", http.StripPrefix("/static/", files))
	s.mux.HandleFunc("GET /{$}", func(w http.ResponseWriter, r *http.Request) {
		b, _ := uiFiles.ReadFile("ui/index.html")
		w.Header().Set("Content-Type", "text/html; charset=utf-8")
		_, _ = w.Write(b)
	})
	s.mux.HandleFunc("GET /api/workspace", s.workspace)
	s.mux.HandleFunc("GET /api/targets", s.targets)
	s.mux.HandleFunc("GET /api/experiments", s.experiments)
	s.mux.HandleFunc("GET /api/runs", s.runs)
	s.mux.HandleFunc("GET /api/runs/{run}", s.run)
	s.mux.HandleFunc("GET /api/runs/{run}/metrics", s.metrics)
	s.mux.HandleFunc("GET /api/runs/{run}/logs", s.logs)
	s.mux.HandleFunc("GET /api/runs/{run}/outputs/{path...}", s.output)
	return s
}

func (s *uiServer) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	h := w.Header()
	// Runs start and end while the page is open: nothing is cached.
	h.Set("Cache-Control", "no-store")
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("X-Frame-Options", "DENY")
	h.Set("Referrer-Policy", "no-referrer")
	h.Set("Content-Security-Policy", "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'none'")
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		h.Set("Allow", "GET, HEAD")
		http.Error(w, "read-only", http.StatusMethodNotAllowed)
		return
	}
	// A page on another site cannot reach the view through a name that
	// resolves to 127.0.0.1 (DNS rebinding): only loopback Host headers.
	if !s.public {
		host, _, err := net.SplitHostPort(r.Host)
		if err != nil {
			host = r.Host
		}
		if !isLoopback(strings.Trim(host, "[]")) {
			http.Error(w, "unexpected Host header", http.StatusForbidden)
			return
		}
	}
	s.mux.ServeHTTP(w, r)
}

func fail(w http.ResponseWriter, err error) {
	code := http.StatusInternalServerError
	var ce *codeError
	switch {
	case engine.IsNotFound(err), errors.Is(err, os.ErrNotExist), errors.As(err, &ce) && ce.code == exitNotFound:
		code = http.StatusNotFound
	case errors.As(err, &ce) && ce.code == exitUsage:
		code = http.StatusBadRequest
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	_ = writeJSON(w, map[string]string{"error": run.SanitizeText(err.Error())})
}

func reply(w http.ResponseWriter, v any) {
	w.Header().Set("Content-Type", "application/json")
	_ = writeJSON(w, v)
}

// runID is the full id of the {run} in a path; only a run id's characters.
func (s *uiServer) runID(r *http.Request) (string, error) {
	id := r.PathValue("run")
	if !engine.NamePattern.MatchString(id) {
		return "", notFound("no run %q", id)
	}
	return s.ws.ID + "/runs/" + id, nil
}

func (s *uiServer) workspace(w http.ResponseWriter, r *http.Request) {
	ws, err := s.eng.ReadWorkspace(r.Context(), s.ws.ID)
	if err != nil {
		fail(w, err)
		return
	}
	reply(w, viewWorkspace(ws, ""))
}

func (s *uiServer) targets(w http.ResponseWriter, r *http.Request) {
	ts, err := s.eng.ListTargets(r.Context(), s.ws.ID)
	if err != nil {
		fail(w, err)
		return
	}
	out := make([]targetView, 0, len(ts))
	for _, t := range ts {
		out = append(out, viewTarget(t))
	}
	reply(w, out)
}

type experimentView struct {
	Name     string             `json:"name"`
	Runs     int                `json:"runs"`
	Active   int                `json:"active"`
	Statuses map[run.Status]int `json:"statuses"`
	Last     time.Time          `json:"last"`
	Metrics  []string           `json:"metrics"`
}

func (s *uiServer) experiments(w http.ResponseWriter, r *http.Request) {
	runs, err := s.eng.ListRuns(r.Context(), s.ws.ID, engine.RunQuery{})
	if err != nil {
		fail(w, err)
		return
	}
	by := map[string]*experimentView{}
	names := map[string]map[string]bool{}
	for _, rn := range runs {
		e := by[rn.Experiment]
		if e == nil {
			e = &experimentView{Name: rn.Experiment, Statuses: map[run.Status]int{}}
			by[rn.Experiment] = e
			names[rn.Experiment] = map[string]bool{}
		}
		e.Runs++
		e.Statuses[rn.Status]++
		if rn.Status.Active() {
			e.Active++
		}
		if rn.CreatedAt.After(e.Last) {
			e.Last = rn.CreatedAt
		}
		for k := range rn.Metrics {
			names[rn.Experiment][k] = true
		}
	}
	out := make([]*experimentView, 0, len(by))
	for n, e := range by {
		e.Metrics = run.SortedKeys(names[n])
		out = append(out, e)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Last.After(out[j].Last) })
	reply(w, out)
}

func (s *uiServer) runs(w http.ResponseWriter, r *http.Request) {
	q := engine.RunQuery{Experiment: r.URL.Query().Get("experiment")}
	for _, st := range strings.Split(r.URL.Query().Get("status"), ",") {
		if st = strings.TrimSpace(st); st != "" {
			q.Statuses = append(q.Statuses, canonicalStatus(st))
		}
	}
	if err := engine.CheckRunQuery(q); err != nil {
		fail(w, usageErr("%v", err))
		return
	}
	runs, err := s.eng.ListRuns(r.Context(), s.ws.ID, q)
	if err != nil {
		fail(w, err)
		return
	}
	out := make([]runView, 0, len(runs))
	for _, rn := range runs {
		out = append(out, viewRun(rn))
	}
	reply(w, out)
}

func (s *uiServer) run(w http.ResponseWriter, r *http.Request) {
	id, err := s.runID(r)
	if err != nil {
		fail(w, err)
		return
	}
	v, err := detail(r.Context(), s.eng, id)
	if err != nil {
		fail(w, err)
		return
	}
	reply(w, v)
}

// metrics is the metric history of a run and of other runs of its experiment
// (the most recent, at most maxOverlay in all), for overlaid charts.
func (s *uiServer) metrics(w http.ResponseWriter, r *http.Request) {
	id, err := s.runID(r)
	if err != nil {
		fail(w, err)
		return
	}
	ctx := r.Context()
	self, err := s.eng.ReadRun(ctx, id)
	if err != nil {
		fail(w, err)
		return
	}
	ids := []string{self.ID}
	if r.URL.Query().Get("overlay") != "0" {
		others, err := s.eng.ListRuns(ctx, s.ws.ID, engine.RunQuery{Experiment: self.Experiment, OrderBy: "created", Descending: true})
		if err != nil {
			fail(w, err)
			return
		}
		for _, o := range others {
			if o.ID != self.ID && len(ids) < maxOverlay {
				ids = append(ids, o.ID)
			}
		}
	}
	type series struct {
		RunID     string       `json:"run_id"`
		Status    run.Status   `json:"status"`
		Truncated bool         `json:"truncated"`
		Metrics   []metricView `json:"metrics"`
	}
	out := make([]series, 0, len(ids))
	for _, rid := range ids {
		ms, truncated, err := s.eng.LiveMetricHistory(ctx, rid)
		if err != nil {
			fail(w, err)
			return
		}
		rn, err := s.eng.ReadRun(ctx, rid)
		if err != nil {
			fail(w, err)
			return
		}
		sv := series{RunID: rn.RunID, Status: rn.Status, Truncated: truncated, Metrics: make([]metricView, 0, len(ms))}
		for _, m := range ms {
			sv.Metrics = append(sv.Metrics, metricView(m))
		}
		out = append(out, sv)
	}
	reply(w, out)
}

func (s *uiServer) logs(w http.ResponseWriter, r *http.Request) {
	id, err := s.runID(r)
	if err != nil {
		fail(w, err)
		return
	}
	offset, _ := strconv.ParseInt(r.URL.Query().Get("offset"), 10, 64)
	b, next, active, err := s.eng.RunLogs(r.Context(), id, offset)
	if err != nil {
		fail(w, err)
		return
	}
	if whole := completeRunes(b); active && len(whole) < len(b) {
		next -= int64(len(b) - len(whole))
		b = whole
	}
	// The text is shown with textContent; escape sequences and control
	// characters are removed so that what a terminal would hide shows plainly.
	reply(w, map[string]any{"offset": offset, "next": next, "active": active, "text": run.SanitizeText(string(b))})
}

// output downloads one output file of a run. The path is untrusted (it comes
// from the URL, and names what a script wrote): the engine opens it beneath
// the run's outputs directory only, as a regular file; it is always served as
// an attachment of an opaque type, so a page among the outputs never runs in
// the view's origin.
func (s *uiServer) output(w http.ResponseWriter, r *http.Request) {
	id, err := s.runID(r)
	if err != nil {
		fail(w, err)
		return
	}
	rel := r.PathValue("path")
	f, st, err := s.eng.OpenRunOutput(r.Context(), id, rel)
	if err != nil {
		fail(w, err)
		return
	}
	defer f.Close()
	name := path.Base(rel)
	if dec, err := run.DecodeName(name); err == nil {
		name = dec
	}
	h := w.Header()
	h.Set("Content-Type", "application/octet-stream")
	disp := mime.FormatMediaType("attachment", map[string]string{"filename": name})
	if disp == "" {
		disp = "attachment"
	}
	h.Set("Content-Disposition", disp)
	h.Set("Content-Security-Policy", "sandbox; default-src 'none'")
	http.ServeContent(w, r, "", st.ModTime(), f)
}
