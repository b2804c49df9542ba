package supervise

import (
	"slices"
	"testing"
)

// TestRunEnvironmentLeavesOutQuietedLogLevels: the log levels the provider set
// itself (QuietLogMarker) do not reach the script; the same variables set by
// the user do.
func TestRunEnvironmentLeavesOutQuietedLogLevels(t *testing.T) {
	base := []string{"HOME=/h", "TF_LOG_SDK=off", "TF_LOG_SDK_PROTO=off", "TF_LOG_SDK_FRAMEWORK=off", "TF_LOG_PROVIDER_AML=off",
		QuietLogMarker + "=1", "TF_PLUGIN_MAGIC_COOKIE=x", "PATH=/bin"}
	got := RunEnvironment(base, map[string]string{"A": "1"}, nil, nil, "")
	if want := []string{"A=1", "HOME=/h", "PATH=/bin"}; !slices.Equal(got, want) {
		t.Errorf("run environment %q, want %q", got, want)
	}
	// The user's own levels (no marker) are the user's: kept.
	got = RunEnvironment([]string{"TF_LOG_SDK=debug", "TF_LOG_PROVIDER_AML=info"}, nil, nil, nil, "")
	if want := []string{"TF_LOG_PROVIDER_AML=info", "TF_LOG_SDK=debug"}; !slices.Equal(got, want) {
		t.Errorf("run environment %q, want %q", got, want)
	}
}
