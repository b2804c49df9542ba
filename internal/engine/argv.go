package engine

import (
	"fmt"
	"os"
	"strings"
)

// Limits of the exec(2) a run's program goes through (Linux): one argument or
// variable at most MAX_ARG_STRLEN bytes, and all of them together (with the
// environment the run inherits) well under ARG_MAX.
const (
	maxArgBytes   = 128 << 10
	maxArgvEnvTot = 1 << 20
)

// CheckProgram checks a run's script, command, arguments and variables for
// what exec would refuse (a NUL byte, an argument over the OS limit, too much in
// total), naming the attribute and index, so it fails at plan instead of as
// "fork/exec: invalid argument" after the run was recorded.
func CheckProgram(script string, command, arguments []string, vars map[string]string) error {
	total := 0
	check := func(attr, s string) error {
		total += len(s) + 1
		switch {
		case strings.IndexByte(s, 0) >= 0:
			return fieldErr(attr, "contains a NUL byte, which no program can receive")
		case len(s) > maxArgBytes:
			return fieldErr(attr, "is %d bytes; one argument or variable may be at most %d bytes (Linux MAX_ARG_STRLEN); pass large values in a file of the source directory", len(s), maxArgBytes)
		}
		return nil
	}
	if script != "" {
		if err := check("script", script); err != nil {
			return err
		}
	}
	for i, c := range command {
		if err := check(fmt.Sprintf("command[%d]", i), c); err != nil {
			return err
		}
	}
	for i, a := range arguments {
		if err := check(fmt.Sprintf("arguments[%d]", i), a); err != nil {
			return err
		}
	}
	for k, v := range vars {
		if strings.ContainsAny(k, "=\x00") || k == "" {
			return fieldErr("environment_variables", "%q is not a valid variable name", k)
		}
		if err := check(fmt.Sprintf("environment_variables[%q]", k), k+"="+v); err != nil {
			return err
		}
	}
	for _, kv := range os.Environ() {
		total += len(kv) + 1
	}
	if total > maxArgvEnvTot {
		return fieldErr("arguments", "the command line and environment come to %d bytes, more than a run may be given (%d); pass large values in a file of the source directory", total, maxArgvEnvTot)
	}
	return nil
}
