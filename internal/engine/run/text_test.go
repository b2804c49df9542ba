package run

import (
	"testing"
	"unicode/utf8"
)

func TestSanitizeText(t *testing.T) {
	for _, tc := range []struct{ in, want string }{
		{"plain\ttext\n", "plain\ttext\n"},
		{"\x1b[31mred\x1b[0m done", "red done"},
		{"copy \x1b]52;c;ZXZpbA==\x07me", "copy me"},
		{"title\x1b]0;pwned\x1b\\ ok", "title ok"},
		{"\x1b[2J\x1b[Hcleared", "cleared"},
		{"50%\r100%\r\nend", "50%\n100%\nend"},
		{"bell\x07 nul\x00 del\x7f", `bell\x07 nul\x00 del\x7f`},
		{"c1 \u009b31m csi", `c1 \u009b31m csi`},
		{"bad \xff utf8", "bad \uFFFD utf8"},
		{"unterminated \x1b]52;c;abc", "unterminated "},
	} {
		if got := SanitizeText(tc.in); got != tc.want {
			t.Errorf("SanitizeText(%q) = %q, want %q", tc.in, got, tc.want)
		}
	}
}

func TestEncodeNameRoundTrips(t *testing.T) {
	for _, raw := range []string{"model.pkl", "dir/ünïcode.txt", "100%.txt", "bad\xffname", "tab\tname", "esc\x1b[31m", "c1\u0085x"} {
		enc := EncodeName(raw)
		for i := 0; i < len(enc); i++ {
			if c := enc[i]; c < 0x20 || c == 0x7f {
				t.Errorf("EncodeName(%q) = %q keeps a control byte", raw, enc)
			}
		}
		if !utf8.ValidString(enc) {
			t.Errorf("EncodeName(%q) = %q is not valid UTF-8", raw, enc)
		}
		if back, err := DecodeName(enc); err != nil || back != raw {
			t.Errorf("DecodeName(EncodeName(%q)) = %q, %v", raw, back, err)
		}
	}
	if EncodeName("plain/name.txt") != "plain/name.txt" || EncodeName("100%") != "100%25" {
		t.Errorf("plain names change: %q %q", EncodeName("plain/name.txt"), EncodeName("100%"))
	}
}

func TestLastTraceback(t *testing.T) {
	log := "starting\nTraceback (most recent call last):\n  File \"a.py\", line 1\nKeyError: 1\nhandled\n" +
		"INFO spark stuff\nTraceback (most recent call last):\n  File \"train.py\", line 9, in <module>\n    fit()\nValueError: bad labels\n" +
		"INFO SparkContext: Successfully stopped SparkContext\nINFO ShutdownHookManager: Shutdown hook called\n"
	want := "Traceback (most recent call last):\n  File \"train.py\", line 9, in <module>\n    fit()\nValueError: bad labels\n"
	if got := LastTraceback(log); got != want {
		t.Fatalf("LastTraceback = %q, want %q", got, want)
	}
	if got := LastTraceback("no trouble here\n"); got != "" {
		t.Fatalf("LastTraceback of a clean log = %q", got)
	}
}
