package snapshot

import (
	"errors"
	"fmt"
	"path"
	"path/filepath"
	"strings"
)

// SanitizeRelPath cleans a path coming back from a host: it rejects absolute paths, any ".."
// component, empty paths and NUL, and returns the cleaned slash-form relative path.
func SanitizeRelPath(p string) (string, error) {
	switch {
	case p == "":
		return "", errors.New("empty path")
	case strings.IndexByte(p, 0) >= 0:
		return "", fmt.Errorf("path %q contains NUL", p)
	case p[0] == '/' || p[0] == '\\' || filepath.IsAbs(p) || filepath.VolumeName(p) != "":
		return "", fmt.Errorf("path %q is absolute", p)
	}
	// Backslash counts as a separator here too, so a Windows-style "..\\x" cannot slip through.
	for c := range strings.FieldsFuncSeq(p, func(r rune) bool { return r == '/' || r == '\\' }) {
		if c == ".." {
			return "", fmt.Errorf("path %q contains \"..\"", p)
		}
	}
	clean := path.Clean(p)
	if clean == "." {
		return "", fmt.Errorf("path %q is empty", p)
	}
	return clean, nil
}
