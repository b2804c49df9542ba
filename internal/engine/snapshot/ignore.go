package snapshot

import (
	"bytes"
	"strings"
)

// rule is one line of an ignore file, following git's dir.c semantics.
type rule struct {
	base     string // directory holding the ignore file, slash form, "" for the root
	pattern  string
	negate   bool
	dirOnly  bool
	basename bool // no slash in the pattern: match the name at any depth
}

// parseIgnore parses an ignore file located in directory base.
func parseIgnore(data []byte, base string) []rule {
	data = bytes.TrimPrefix(data, []byte("\xef\xbb\xbf"))
	var rules []rule
	for line := range strings.SplitSeq(string(data), "\n") {
		line = strings.TrimSuffix(line, "\r")
		if line == "" || line[0] == '#' {
			continue
		}
		line = trimTrailingSpaces(line)
		r := rule{base: base}
		if strings.HasPrefix(line, "!") {
			r.negate = true
			line = line[1:]
		}
		if strings.HasSuffix(line, "/") {
			r.dirOnly = true
			line = line[:len(line)-1]
		}
		r.basename = !strings.Contains(line, "/")
		// A leading slash only anchors; the pattern is matched relative to base.
		line = strings.TrimPrefix(line, "/")
		if line == "" {
			continue
		}
		r.pattern = line
		rules = append(rules, r)
	}
	return rules
}

// trimTrailingSpaces drops unescaped trailing spaces, as git does.
func trimTrailingSpaces(s string) string {
	lastSpace := -1
	for i := 0; i < len(s); i++ {
		switch s[i] {
		case ' ':
			if lastSpace < 0 {
				lastSpace = i
			}
		case '\\':
			i++
			if i == len(s) {
				return s
			}
			lastSpace = -1
		default:
			lastSpace = -1
		}
	}
	if lastSpace >= 0 {
		return s[:lastSpace]
	}
	return s
}

// ignored reports whether rel (slash form, with basename name) is excluded. Rules are ordered from
// the shallowest ignore file to the deepest and, within a file, top to bottom: the last match wins.
// Parents are never checked here because the walk does not descend into excluded directories.
func ignored(rules []rule, rel, name string, isDir bool) bool {
	for i := len(rules) - 1; i >= 0; i-- {
		r := &rules[i]
		if r.dirOnly && !isDir {
			continue
		}
		var ok bool
		if r.basename {
			ok = wildmatch(r.pattern, name)
		} else {
			sub := rel
			if r.base != "" {
				sub = strings.TrimPrefix(rel, r.base+"/")
			}
			ok = wildmatch(r.pattern, sub)
		}
		if ok {
			return !r.negate
		}
	}
	return false
}

// wildmatch is a port of git's wildmatch.c with WM_PATHNAME: '*' and '?' do not match '/', and
// "**/" , "/**/" and "/**" span directories.
func wildmatch(pattern, text string) bool {
	return dowild(pattern, text) == wmMatch
}

const (
	wmMatch = iota
	wmNoMatch
	wmAbortAll
	wmAbortToStarStar
)

// at returns s[i] or 0 past the end, mirroring the C string terminator.
func at(s string, i int) byte {
	if i < len(s) {
		return s[i]
	}
	return 0
}

func isGlobSpecial(c byte) bool {
	return c == '*' || c == '?' || c == '[' || c == '\\'
}

func dowild(p, text string) int {
	pi, ti := 0, 0
	for ; pi < len(p); pi, ti = pi+1, ti+1 {
		pch := p[pi]
		tch := at(text, ti)
		if tch == 0 && pch != '*' {
			return wmAbortAll
		}
		switch pch {
		case '\\':
			pi++
			if tch != at(p, pi) {
				return wmNoMatch
			}
		default:
			if tch != pch {
				return wmNoMatch
			}
		case '?':
			if tch == '/' {
				return wmNoMatch
			}
		case '*':
			pi++
			matchSlash := false
			if at(p, pi) == '*' {
				prev := pi - 2
				for pi++; at(p, pi) == '*'; pi++ {
				}
				if (prev < 0 || p[prev] == '/') &&
					(pi == len(p) || p[pi] == '/' || (p[pi] == '\\' && at(p, pi+1) == '/')) {
					// "**/" may match no directory at all: foo/**/bar matches foo/bar.
					if at(p, pi) == '/' && dowild(p[pi+1:], text[ti:]) == wmMatch {
						return wmMatch
					}
					matchSlash = true
				}
			}
			if pi == len(p) {
				// Trailing "**" matches everything; a trailing "*" only within one component.
				if !matchSlash && strings.IndexByte(text[ti:], '/') >= 0 {
					return wmNoMatch
				}
				return wmMatch
			} else if !matchSlash && p[pi] == '/' {
				// One star followed by a slash matches exactly the next component.
				slash := strings.IndexByte(text[ti:], '/')
				if slash < 0 {
					return wmNoMatch
				}
				ti += slash
				continue // the loop step consumes the slash in both
			}
			for ti < len(text) {
				tch = text[ti]
				if !isGlobSpecial(p[pi]) {
					// Skip ahead to the next occurrence of the literal that follows the star.
					pc := p[pi]
					for ti < len(text) && (matchSlash || text[ti] != '/') && text[ti] != pc {
						ti++
					}
					if at(text, ti) != pc {
						return wmNoMatch
					}
					tch = pc
				}
				m := dowild(p[pi:], text[ti:])
				if m != wmNoMatch {
					if !matchSlash || m != wmAbortToStarStar {
						return m
					}
				} else if !matchSlash && tch == '/' {
					return wmAbortToStarStar
				}
				ti++
			}
			return wmAbortAll
		case '[':
			pi++
			pch = at(p, pi)
			if pch == '^' {
				pch = '!'
			}
			negated := pch == '!'
			if negated {
				pi++
				pch = at(p, pi)
			}
			var prev byte
			matched := false
			for {
				if pch == 0 {
					return wmAbortAll
				}
				switch {
				case pch == '\\':
					pi++
					pch = at(p, pi)
					if pch == 0 {
						return wmAbortAll
					}
					if tch == pch {
						matched = true
					}
				case pch == '-' && prev != 0 && at(p, pi+1) != 0 && at(p, pi+1) != ']':
					pi++
					pch = p[pi]
					if pch == '\\' {
						pi++
						pch = at(p, pi)
						if pch == 0 {
							return wmAbortAll
						}
					}
					if tch <= pch && tch >= prev {
						matched = true
					}
					pch = 0 // a range cannot start another range
				case pch == '[' && at(p, pi+1) == ':':
					s := pi + 2
					e := s
					for e < len(p) && p[e] != ']' {
						e++
					}
					if e == len(p) {
						return wmAbortAll
					}
					if e == s || p[e-1] != ':' {
						// Not "[:class:]": a literal '['.
						pi = s - 2
						pch = '['
						if tch == '[' {
							matched = true
						}
						break
					}
					in, ok := charClass(p[s:e-1], tch)
					if !ok {
						return wmAbortAll
					}
					if in {
						matched = true
					}
					pi = e
					pch = 0
				default:
					if tch == pch {
						matched = true
					}
				}
				prev = pch
				pi++
				pch = at(p, pi)
				if pch == ']' {
					break
				}
			}
			if matched == negated || tch == '/' {
				return wmNoMatch
			}
		}
	}
	if ti < len(text) {
		return wmNoMatch
	}
	return wmMatch
}

// charClass evaluates a POSIX bracket class on an ASCII byte; ok is false for an unknown class.
func charClass(name string, c byte) (in, ok bool) {
	isUpper := 'A' <= c && c <= 'Z'
	isLower := 'a' <= c && c <= 'z'
	isDigit := '0' <= c && c <= '9'
	isAlpha := isUpper || isLower
	isPrint := 0x20 <= c && c < 0x7f
	switch name {
	case "alnum":
		return isAlpha || isDigit, true
	case "alpha":
		return isAlpha, true
	case "blank":
		return c == ' ' || c == '\t', true
	case "cntrl":
		return c < 0x20 || c == 0x7f, true
	case "digit":
		return isDigit, true
	case "graph":
		return isPrint && c != ' ', true
	case "lower":
		return isLower, true
	case "print":
		return isPrint, true
	case "punct":
		return isPrint && c != ' ' && !isAlpha && !isDigit, true
	case "space":
		return c == ' ' || ('\t' <= c && c <= '\r'), true
	case "upper":
		return isUpper, true
	case "xdigit":
		return isDigit || ('a' <= c && c <= 'f') || ('A' <= c && c <= 'F'), true
	}
	return false, false
}
