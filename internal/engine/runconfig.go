package engine

import (
	"context"
	"encoding/json"
	"fmt"
	"path/filepath"
	"regexp"
	"slices"
	"strings"

	"github.com/openaml/terraform-provider-aml/internal/engine/env"
	"github.com/openaml/terraform-provider-aml/internal/engine/run"
	"github.com/openaml/terraform-provider-aml/internal/engine/store"
)

// Allowed values, shared with the provider's validators and descriptions.
var (
	Frameworks    = []string{"Python", "PySpark"}
	Communicators = []string{"None", "ParameterServer", "OpenMpi", "IntelMpi", "Nccl", "Gloo"}
)

// NamePattern is the rule for run configuration and experiment names.
var NamePattern = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$`)

const runConfigSep = "/runconfigs/"

// RunConfigSpec mirrors Azure's RunConfiguration.
type RunConfigSpec struct {
	Name                  string            `json:"name"`
	Framework             string            `json:"framework"`
	Communicator          string            `json:"communicator"`
	NodeCount             int               `json:"node_count"`
	Environment           env.Environment   `json:"environment"`
	EnvironmentVariables  map[string]string `json:"environment_variables,omitempty"`
	MaxRunDurationSeconds int64             `json:"max_run_duration_seconds,omitempty"`
	// Spark is the configuration of PySpark runs (Azure's SparkConfiguration).
	Spark *SparkConfig `json:"spark,omitempty"`
	// Slurm are per-run resources of batch jobs (aml_batch_attachment).
	Slurm *SlurmResources `json:"slurm,omitempty"`
}

// SparkConfig is what a PySpark run passes to spark-submit.
type SparkConfig struct {
	// Configuration are --conf pairs, merged over the target's defaults.
	Configuration map[string]string `json:"configuration,omitempty"`
}

// sparkConfKey is what spark-submit takes as a --conf key.
var sparkConfKey = regexp.MustCompile(`^spark\.[A-Za-z0-9_.-]*[A-Za-z0-9_-]$`)

// RunConfig is a stored run configuration.
type RunConfig struct {
	ID              string
	WorkspaceID     string
	Spec            RunConfigSpec
	EnvironmentHash string
}

// RunConfigID builds "<workspace_id>/runconfigs/<name>".
func RunConfigID(workspaceID, name string) string {
	return cleanID(workspaceID) + runConfigSep + name
}

// ParseRunConfigID splits a run configuration id.
func ParseRunConfigID(id string) (workspaceID, name string, err error) {
	return parseChildID(id, runConfigSep, NamePattern, "run configuration id", "{name}")
}

// parseChildID splits "<workspace id><sep><name>" ids. The workspace id is a
// UUID, or an absolute directory in ids written before workspace ids.
func parseChildID(id, sep string, name *regexp.Regexp, kind, form string) (string, string, error) {
	i := strings.LastIndex(id, sep)
	if i <= 0 || !(store.UIDPattern.MatchString(id[:i]) || filepath.IsAbs(id[:i])) || !name.MatchString(id[i+len(sep):]) {
		return "", "", fmt.Errorf("%s %q is not of the form {workspace_id}%s%s", kind, id, sep, form)
	}
	return id[:i], id[i+len(sep):], nil
}

// Normalize fills defaults.
func (s *RunConfigSpec) Normalize() {
	if s.Framework == "" {
		s.Framework = "Python"
	}
	if s.Communicator == "" {
		s.Communicator = "None"
	}
	if s.NodeCount == 0 {
		s.NodeCount = 1
	}
}

// Validate checks a run configuration; errors are *FieldError.
func (s RunConfigSpec) Validate() error {
	if !NamePattern.MatchString(s.Name) {
		return fieldErr("name", "%q is not a valid name: use up to 128 letters, digits, '.', '-' or '_', starting with a letter or digit", s.Name)
	}
	if !slices.Contains(Frameworks, s.Framework) {
		return fieldErr("framework", "%q is not a supported framework; valid values are %s", s.Framework, strings.Join(Frameworks, ", "))
	}
	if !slices.Contains(Communicators, s.Communicator) {
		return fieldErr("communicator", "%q is not a supported communicator; valid values are %s", s.Communicator, strings.Join(Communicators, ", "))
	}
	if s.NodeCount < 1 {
		return fieldErr("node_count", "must be at least 1, got %d", s.NodeCount)
	}
	if s.MaxRunDurationSeconds < 0 {
		return fieldErr("max_run_duration_seconds", "must be positive, got %d", s.MaxRunDurationSeconds)
	}
	for k := range s.EnvironmentVariables {
		if !envNamePattern.MatchString(k) {
			return fieldErr("environment_variables", "%q is not a valid environment variable name", k)
		}
	}
	if err := CheckSparkConfig(s.Framework, s.Spark); err != nil {
		return err
	}
	if err := CheckSlurmResources(s.Slurm); err != nil {
		return err
	}
	return s.Environment.Validate()
}

// CheckSparkConfig checks a run configuration's spark block (usable at plan).
func CheckSparkConfig(framework string, sc *SparkConfig) error {
	if sc == nil {
		return nil
	}
	if framework != "PySpark" {
		return fieldErr("spark", "is for PySpark runs; set framework = \"PySpark\" or remove the spark block")
	}
	for _, k := range run.SortedKeys(sc.Configuration) {
		if !sparkConfKey.MatchString(k) {
			return fieldErr("spark.configuration", "%q is not a Spark configuration key: keys start with \"spark.\" and hold letters, digits, '.', '-' and '_' (e.g. spark.executor.memory)", k)
		}
	}
	return nil
}

var envNamePattern = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_]*$`)

// EnvironmentHash is the hash of the configuration's environment definition.
func (s RunConfigSpec) EnvironmentHash() string { return s.Environment.Hash() }

// PutRunConfig validates and stores a run configuration (create or update).
func (e *Engine) PutRunConfig(ctx context.Context, workspaceID string, spec RunConfigSpec) (*RunConfig, error) {
	spec.Normalize()
	if err := spec.Validate(); err != nil {
		return nil, err
	}
	s, err := e.open(ctx, workspaceID)
	if err != nil {
		return nil, fieldErr("workspace_id", "%v", err)
	}
	body, err := json.Marshal(spec)
	if err != nil {
		return nil, err
	}
	if err := s.PutRunConfig(ctx, store.RunConfigRow{Name: spec.Name, Spec: body, EnvironmentHash: spec.EnvironmentHash()}); err != nil {
		return nil, err
	}
	return e.ReadRunConfig(ctx, RunConfigID(s.UID, spec.Name))
}

// ReadRunConfig returns a wrapped ErrNotFound for an unknown configuration.
func (e *Engine) ReadRunConfig(ctx context.Context, id string) (*RunConfig, error) {
	wsID, name, err := ParseRunConfigID(id)
	if err != nil {
		return nil, err
	}
	s, err := e.open(ctx, wsID)
	if err != nil {
		return nil, err
	}
	row, err := s.GetRunConfig(ctx, name)
	if err != nil {
		return nil, err
	}
	rc := &RunConfig{ID: RunConfigID(s.UID, name), WorkspaceID: s.UID, EnvironmentHash: row.EnvironmentHash}
	if err := json.Unmarshal(row.Spec, &rc.Spec); err != nil {
		return nil, fmt.Errorf("run configuration %s is corrupt: %w", id, err)
	}
	return rc, nil
}

// DeleteRunConfig removes it; runs keep the copy they were submitted with.
func (e *Engine) DeleteRunConfig(ctx context.Context, id string) error {
	wsID, name, err := ParseRunConfigID(id)
	if err != nil {
		return err
	}
	s, err := e.open(ctx, wsID)
	if IsNotFound(err) {
		return nil
	}
	if err != nil {
		return err
	}
	return s.DeleteRunConfig(ctx, name)
}
