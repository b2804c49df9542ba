// Package field is the engine's one error type for a fault in the configuration:
// it names the attribute (a dotted path as in the Terraform schema), so the
// provider attaches the diagnostic to it.
package field

import "fmt"

// Error names the configuration attribute at fault.
type Error struct {
	Attr string `json:"attr"`
	Msg  string `json:"msg"`
}

func (e *Error) Error() string { return e.Attr + ": " + e.Msg }

// Errorf builds an *Error for attr.
func Errorf(attr, format string, args ...any) error {
	return &Error{Attr: attr, Msg: fmt.Sprintf(format, args...)}
}

// Within re-roots an *Error under a parent attribute ("run_based_compute" +
// "vm_size"); any other error is returned as is.
func Within(parent string, err error) error {
	if fe, ok := err.(*Error); ok {
		return &Error{Attr: parent + "." + fe.Attr, Msg: fe.Msg}
	}
	return err
}
