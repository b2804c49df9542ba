package env

import (
	"fmt"
	"regexp"
	"strings"
	"sync"
)

// PEP 508 requirement syntax, as pip and uv accept it: a name, optional
// extras, then a version specifier list or a URL, then optional markers.
// Markers are checked for being present and balanced, not evaluated.
var (
	reqName      = lazyRegexp(`^[A-Za-z0-9](?:[A-Za-z0-9._-]*[A-Za-z0-9])?`)
	reqExtras    = lazyRegexp(`^\[\s*(?:[A-Za-z0-9](?:[A-Za-z0-9._-]*[A-Za-z0-9])?\s*(?:,\s*[A-Za-z0-9](?:[A-Za-z0-9._-]*[A-Za-z0-9])?\s*)*)?\]`)
	reqSpecifier = lazyRegexp(`^(?:===|==|!=|<=|>=|~=|<|>)\s*[A-Za-z0-9*+!._-]+$`)
)

// CheckRequirement reports why s is not a PEP 508 requirement, or nil.
func CheckRequirement(s string) error {
	rest := strings.TrimSpace(s)
	if rest == "" {
		return fmt.Errorf("is empty")
	}
	if i := strings.IndexByte(rest, ';'); i >= 0 {
		if err := checkMarkers(rest[i+1:]); err != nil {
			return err
		}
		rest = strings.TrimSpace(rest[:i])
	}
	name := reqName().FindString(rest)
	if name == "" {
		return fmt.Errorf("does not start with a package name (letters, digits, '.', '-', '_')")
	}
	rest = strings.TrimSpace(rest[len(name):])
	if strings.HasPrefix(rest, "[") {
		ex := reqExtras().FindString(rest)
		if ex == "" {
			return fmt.Errorf("has malformed extras %q (want e.g. name[extra1,extra2])", rest)
		}
		rest = strings.TrimSpace(rest[len(ex):])
	}
	switch {
	case rest == "":
		return nil
	case strings.HasPrefix(rest, "@"):
		if url := strings.TrimSpace(rest[1:]); url == "" || strings.ContainsAny(url, " \t") {
			return fmt.Errorf("has a malformed URL after '@'")
		}
		return nil
	}
	if strings.HasPrefix(rest, "(") && strings.HasSuffix(rest, ")") {
		rest = strings.TrimSpace(rest[1 : len(rest)-1])
	}
	for _, spec := range strings.Split(rest, ",") {
		if !reqSpecifier().MatchString(strings.TrimSpace(spec)) {
			return fmt.Errorf("has a malformed version specifier %q (want e.g. ==1.5.2, >=2.2,<3, ~=1.4)", strings.TrimSpace(spec))
		}
	}
	return nil
}

func checkMarkers(m string) error {
	m = strings.TrimSpace(m)
	if m == "" {
		return fmt.Errorf("has ';' but no environment marker after it")
	}
	depth := 0
	for _, r := range m {
		switch r {
		case '(':
			depth++
		case ')':
			depth--
		}
		if depth < 0 {
			break
		}
	}
	if depth != 0 {
		return fmt.Errorf("has unbalanced parentheses in its environment marker %q", m)
	}
	return nil
}

// lazyRegexp compiles expr at its first use: the package's patterns are used by
// validation only, and compiling them all at init cost every start of the
// provider and of each run's supervisor about 0.6 ms.
func lazyRegexp(expr string) func() *regexp.Regexp {
	return sync.OnceValue(func() *regexp.Regexp { return regexp.MustCompile(expr) })
}
