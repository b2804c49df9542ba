package main

import (
	"encoding/json"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"golang.org/x/sys/unix"

	"github.com/openaml/terraform-provider-aml/internal/engine/run"
)

// term says what the output is: colour and a width only on a terminal.
type term struct {
	color bool
	width int // 0: no limit
}

func termOf(w io.Writer) term {
	f, ok := w.(*os.File)
	if !ok {
		return term{}
	}
	st, err := f.Stat()
	if err != nil || st.Mode()&os.ModeCharDevice == 0 {
		return term{}
	}
	t := term{color: os.Getenv("NO_COLOR") == "" && os.Getenv("TERM") != "dumb"}
	if ws, err := unix.IoctlGetWinsize(int(f.Fd()), unix.TIOCGWINSZ); err == nil && ws.Col > 0 {
		t.width = int(ws.Col)
	} else if c, err := strconv.Atoi(os.Getenv("COLUMNS")); err == nil && c > 0 {
		t.width = c
	}
	return t
}

const (
	red    = "31"
	green  = "32"
	yellow = "33"
	blue   = "34"
	gray   = "90"
)

func (t term) paint(code, s string) string {
	if !t.color || s == "" {
		return s
	}
	return "\x1b[" + code + "m" + s + "\x1b[0m"
}

func statusColor(s run.Status) string {
	switch s {
	case run.Completed:
		return green
	case run.Failed:
		return red
	case run.Canceled, run.CancelRequested:
		return yellow
	case run.Running, run.Finalizing:
		return blue
	}
	return gray
}

// table prints aligned columns; cells are shown as sanitized text (a run's
// names and values are untrusted), the last column is cut to the width.
type table struct {
	head  []string
	rows  [][]string
	paint []func(string) string // per column, may be nil; applied after padding
}

func (tb *table) add(cells ...string) { tb.rows = append(tb.rows, cells) }

func (tb *table) print(w io.Writer, t term) {
	n := len(tb.head)
	widths := make([]int, n)
	clean := func(s string) string {
		s = run.SanitizeText(s)
		return strings.NewReplacer("\n", `\n`, "\t", " ").Replace(s)
	}
	rows := append([][]string{tb.head}, tb.rows...)
	for i, r := range rows {
		for j := range r {
			r[j] = clean(r[j])
			widths[j] = max(widths[j], utf8.RuneCountInString(r[j]))
		}
		rows[i] = r
	}
	for i, r := range rows {
		var b strings.Builder
		used := 0
		for j := 0; j < n && j < len(r); j++ {
			cell := r[j]
			last := j == n-1 || j == len(r)-1
			if t.width > 0 && last {
				cell = cut(cell, t.width-used)
			}
			pad := ""
			if !last {
				pad = strings.Repeat(" ", widths[j]-utf8.RuneCountInString(cell)+2)
			}
			switch {
			case i == 0:
				cell = t.paint("1", cell)
			case j < len(tb.paint) && tb.paint[j] != nil:
				cell = tb.paint[j](cell)
			}
			b.WriteString(cell + pad)
			used += widths[j] + 2
		}
		fmt.Fprintln(w, strings.TrimRight(b.String(), " "))
	}
}

func cut(s string, n int) string {
	if n <= 1 {
		return ""
	}
	if utf8.RuneCountInString(s) <= n {
		return s
	}
	r := []rune(s)
	return string(r[:n-1]) + "…"
}

// ago is a relative time ("3m ago").
func ago(t *time.Time, now time.Time) string {
	if t == nil || t.IsZero() {
		return "-"
	}
	d := now.Sub(*t)
	if d < 0 {
		return "in " + short(-d)
	}
	if d < time.Second {
		return "just now"
	}
	return short(d) + " ago"
}

// short is a duration in its two largest units ("1h10m", "3m05s", "42s").
func short(d time.Duration) string {
	d = d.Round(time.Second)
	switch {
	case d >= 48*time.Hour:
		return fmt.Sprintf("%dd%02dh", int(d.Hours())/24, int(d.Hours())%24)
	case d >= time.Hour:
		return fmt.Sprintf("%dh%02dm", int(d.Hours()), int(d.Minutes())%60)
	case d >= time.Minute:
		return fmt.Sprintf("%dm%02ds", int(d.Minutes()), int(d.Seconds())%60)
	}
	return fmt.Sprintf("%ds", int(d.Seconds()))
}

func seconds(s float64) string {
	if s <= 0 {
		return "-"
	}
	if s < 10 {
		return strconv.FormatFloat(s, 'f', 1, 64) + "s"
	}
	return short(time.Duration(s * float64(time.Second)))
}

func num(v float64) string { return strconv.FormatFloat(v, 'g', 6, 64) }

// completeRunes is b without a UTF-8 sequence cut at its end (a log read while
// the run writes it may end in the middle of a character): what is held back
// comes with the next read.
func completeRunes(b []byte) []byte {
	for i := len(b) - 1; i >= 0 && i >= len(b)-utf8.UTFMax; i-- {
		if utf8.RuneStart(b[i]) {
			if !utf8.FullRune(b[i:]) {
				return b[:i]
			}
			break
		}
	}
	return b
}

func writeJSON(w io.Writer, v any) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}
