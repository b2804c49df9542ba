package env

import "testing"

func TestCheckRequirement(t *testing.T) {
	for _, ok := range []string{
		"numpy", "scikit-learn==1.5.2", "pandas>=2.2", "torch >= 2.0, < 3", "requests[security,socks]~=2.31",
		"zope.interface===5.4.0", "foo (>=1.0)", "pkg @ https://example.com/pkg-1.0.tar.gz",
		`numpy==1.26; python_version < "3.12"`, "a_b-c.d!=1.0.*", "tinypkg==1.0+local",
	} {
		if err := CheckRequirement(ok); err != nil {
			t.Errorf("%q: %v", ok, err)
		}
	}
	for _, bad := range []string{
		"", "==1.0", "numpy==", "numpy 1.2", "numpy>=1.0,", "foo[bar", "-e .", "pkg @", "numpy; ", `x; (python_version < "3"`, "numpy=1.2",
	} {
		if err := CheckRequirement(bad); err == nil {
			t.Errorf("%q accepted", bad)
		}
	}
}
