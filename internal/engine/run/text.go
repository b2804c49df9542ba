package run

import (
	"fmt"
	"strings"
	"unicode/utf8"
)

// SanitizeText makes text that a run wrote (its log, messages, metric names)
// safe to show in a terminal: escape sequences are removed (colours as well as
// OSC 52 clipboard writes, title changes and screen clears), a lone carriage
// return becomes a newline (so nothing overwrites a line already shown), other
// control characters are escaped as \xNN, and invalid UTF-8 is replaced. The
// raw log file is never changed; this is for attributes and diagnostics.
func SanitizeText(s string) string {
	if isPlain(s) {
		return s
	}
	var b strings.Builder
	b.Grow(len(s))
	for i := 0; i < len(s); {
		c := s[i]
		switch {
		case c == 0x1b:
			i = skipEscape(s, i)
			continue
		case c == '\r':
			if i+1 < len(s) && s[i+1] == '\n' {
				i++
				continue
			}
			b.WriteByte('\n')
		case c == '\n' || c == '\t':
			b.WriteByte(c)
		case c < 0x20 || c == 0x7f:
			fmt.Fprintf(&b, `\x%02x`, c)
		case c < utf8.RuneSelf:
			b.WriteByte(c)
		default:
			r, size := utf8.DecodeRuneInString(s[i:])
			switch {
			case r == utf8.RuneError && size == 1:
				b.WriteRune(utf8.RuneError)
			case r >= 0x80 && r <= 0x9f: // C1 controls, e.g. a one-byte CSI
				fmt.Fprintf(&b, `\u%04x`, r)
			default:
				b.WriteString(s[i : i+size])
			}
			i += size
			continue
		}
		i++
	}
	return b.String()
}

func isPlain(s string) bool {
	for i := 0; i < len(s); i++ {
		c := s[i]
		if (c < 0x20 && c != '\n' && c != '\t') || c >= 0x7f {
			return false
		}
	}
	return true
}

// skipEscape returns the index after the escape sequence starting at s[i].
func skipEscape(s string, i int) int {
	i++ // ESC
	if i >= len(s) {
		return i
	}
	switch s[i] {
	case '[': // CSI: parameters and intermediates, then a final byte 0x40-0x7e
		for i++; i < len(s); i++ {
			if s[i] >= 0x40 && s[i] <= 0x7e {
				return i + 1
			}
		}
		return i
	case ']', 'P', 'X', '^', '_': // OSC, DCS, SOS, PM, APC: until BEL or ST (ESC \)
		for i++; i < len(s); i++ {
			if s[i] == 0x07 {
				return i + 1
			}
			if s[i] == 0x1b && i+1 < len(s) && s[i+1] == '\\' {
				return i + 2
			}
		}
		return i
	default: // a two-byte sequence
		return i + 1
	}
}

// EncodeName shows a file name that a run created as text that round-trips:
// printable UTF-8 stays as is, '%' and every other byte (invalid UTF-8, control
// characters) become %XX, as in a URL path. DecodeName reverses it.
func EncodeName(raw string) string {
	plain := true
	for i := 0; i < len(raw); i++ {
		if c := raw[i]; c < 0x20 || c == 0x7f || c == '%' || c >= 0x80 {
			plain = false
			break
		}
	}
	if plain {
		return raw
	}
	var b strings.Builder
	for i := 0; i < len(raw); {
		r, size := utf8.DecodeRuneInString(raw[i:])
		switch {
		case r == utf8.RuneError && size <= 1, r < 0x20, r == 0x7f, r == '%', r >= 0x80 && r <= 0x9f:
			for j := 0; j < size; j++ {
				fmt.Fprintf(&b, "%%%02X", raw[i+j])
			}
		default:
			b.WriteString(raw[i : i+size])
		}
		i += size
	}
	return b.String()
}

// DecodeName is the inverse of EncodeName.
func DecodeName(enc string) (string, error) {
	if !strings.Contains(enc, "%") {
		return enc, nil
	}
	var b strings.Builder
	for i := 0; i < len(enc); i++ {
		if enc[i] != '%' {
			b.WriteByte(enc[i])
			continue
		}
		if i+2 >= len(enc) {
			return "", fmt.Errorf("name %q: truncated %%-escape", enc)
		}
		var v byte
		if _, err := fmt.Sscanf(enc[i+1:i+3], "%02X", &v); err != nil {
			return "", fmt.Errorf("name %q: bad %%-escape", enc)
		}
		b.WriteByte(v)
		i += 2
	}
	return b.String(), nil
}

// LastTraceback returns the last Python traceback in a log: from its
// "Traceback (most recent call last):" line through the exception line that
// ends it (at most 100 lines), or "" when there is none.
func LastTraceback(log string) string {
	const head = "Traceback (most recent call last):"
	i := strings.LastIndex(log, head)
	if i < 0 {
		return ""
	}
	lines := strings.Split(log[i:], "\n")
	end := 1
	for end < len(lines) && end < 100 {
		l := lines[end]
		end++
		if l != "" && l[0] != ' ' && l[0] != '\t' {
			break // the exception line, e.g. "ValueError: bad input"
		}
	}
	return strings.Join(lines[:end], "\n") + "\n"
}
