package run

import "testing"

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
