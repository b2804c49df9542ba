package main

import (
	"strings"
	"testing"
	"time"
)

func TestCompleteRunes(t *testing.T) {
	for _, c := range []struct{ in, want string }{
		{"", ""}, {"abc", "abc"}, {"a\xc3", "a"}, {"a\xc3\xa9", "a\xc3\xa9"}, {"\xe2\x82", ""}, {"x\xe2\x82\xac", "x\xe2\x82\xac"},
		{"x\xf0\x9f\x98", "x"}, {"x\xff", "x\xff"}, // invalid, not partial: kept
	} {
		if got := string(completeRunes([]byte(c.in))); got != c.want {
			t.Errorf("completeRunes(%q) = %q, want %q", c.in, got, c.want)
		}
	}
}

func TestTableAlignsAndCuts(t *testing.T) {
	tb := &table{head: []string{"A", "LONG HEADER", "LAST"}}
	tb.add("x\x1b[31m", "é", "a very long last column value")
	tb.add("yy", "z", "\x1b]52;c;AAAA\x07ok")
	var b strings.Builder
	tb.print(&b, term{width: 24})
	lines := strings.Split(strings.TrimRight(b.String(), "\n"), "\n")
	if len(lines) != 3 || strings.Contains(b.String(), "\x1b") || strings.Index(lines[0], "LAST") != strings.Index(lines[2], "ok") {
		t.Fatalf("table:\n%s", b.String())
	}
	for _, l := range lines {
		if n := len([]rune(l)); n > 24 {
			t.Errorf("line of %d runes, wider than 24: %q", n, l)
		}
	}
}

func TestRelativeTimes(t *testing.T) {
	now := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	at := func(d time.Duration) *time.Time { x := now.Add(-d); return &x }
	for _, c := range []struct {
		t    *time.Time
		want string
	}{{nil, "-"}, {at(0), "just now"}, {at(42 * time.Second), "42s ago"}, {at(3*time.Minute + 5*time.Second), "3m05s ago"},
		{at(70 * time.Minute), "1h10m ago"}, {at(50 * time.Hour), "2d02h ago"}} {
		if got := ago(c.t, now); got != c.want {
			t.Errorf("ago = %q, want %q", got, c.want)
		}
	}
}
