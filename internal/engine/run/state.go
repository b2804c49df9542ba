package run

import "time"

// State is one observation of a run, as a driver or the run directory's supervisor reports it.
type State struct {
	Status        Status     `json:"status"`
	FailureReason string     `json:"failure_reason,omitempty"`
	ExitCode      *int       `json:"exit_code,omitempty"`
	Signal        string     `json:"signal,omitempty"`
	Message       string     `json:"message,omitempty"`
	StartTime     *time.Time `json:"start_time,omitempty"`
	EndTime       *time.Time `json:"end_time,omitempty"`
	Environment   *EnvInfo   `json:"environment,omitempty"`
	// Builder, while Preparing, is what builds the environment (uv,
	// venv+pip, conda...).
	Builder string `json:"builder,omitempty"`
	// NodeExitCodes holds every rank's exit code of a multi-node run.
	NodeExitCodes []int `json:"node_exit_codes,omitempty"`
	// Details are what a kind knows of the run besides its status (e.g.
	// "spark_application_id", "slurm_job_id"), kept in the run record.
	Details map[string]string `json:"details,omitempty"`
	// Phases is when the run entered each status, as the host saw it (the
	// timeline of `aml runs show` and the web view); kinds may leave it empty.
	Phases map[Status]time.Time `json:"phases,omitempty"`
}

// EnvInfo reports which environment a run used and what preparing it cost.
type EnvInfo struct {
	Key          string  `json:"key"`
	CacheHit     bool    `json:"cache_hit"`
	BuildSeconds float64 `json:"build_seconds"`
	Builder      string  `json:"builder,omitempty"`
}
