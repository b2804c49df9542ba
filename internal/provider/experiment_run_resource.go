package provider

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"reflect"
	"time"

	"github.com/hashicorp/terraform-plugin-framework-timeouts/resource/timeouts"
	"github.com/hashicorp/terraform-plugin-framework-validators/int64validator"
	"github.com/hashicorp/terraform-plugin-framework-validators/listvalidator"
	"github.com/hashicorp/terraform-plugin-framework-validators/objectvalidator"
	"github.com/hashicorp/terraform-plugin-framework-validators/stringvalidator"
	"github.com/hashicorp/terraform-plugin-framework/attr"
	"github.com/hashicorp/terraform-plugin-framework/diag"
	"github.com/hashicorp/terraform-plugin-framework/path"
	"github.com/hashicorp/terraform-plugin-framework/resource"
	"github.com/hashicorp/terraform-plugin-framework/resource/schema"
	"github.com/hashicorp/terraform-plugin-framework/resource/schema/booldefault"
	"github.com/hashicorp/terraform-plugin-framework/resource/schema/int64planmodifier"
	"github.com/hashicorp/terraform-plugin-framework/resource/schema/listplanmodifier"
	"github.com/hashicorp/terraform-plugin-framework/resource/schema/mapplanmodifier"
	"github.com/hashicorp/terraform-plugin-framework/resource/schema/objectplanmodifier"
	"github.com/hashicorp/terraform-plugin-framework/resource/schema/planmodifier"
	"github.com/hashicorp/terraform-plugin-framework/resource/schema/stringdefault"
	"github.com/hashicorp/terraform-plugin-framework/resource/schema/stringplanmodifier"
	"github.com/hashicorp/terraform-plugin-framework/schema/validator"
	"github.com/hashicorp/terraform-plugin-framework/tfsdk"
	"github.com/hashicorp/terraform-plugin-framework/types"
	"github.com/hashicorp/terraform-plugin-framework/types/basetypes"
	"github.com/hashicorp/terraform-plugin-go/tftypes"
	"github.com/hashicorp/terraform-plugin-log/tflog"

	"github.com/openaml/terraform-provider-aml/internal/engine"
	"github.com/openaml/terraform-provider-aml/internal/engine/snapshot"
)

var (
	_ resource.ResourceWithConfigure      = &ExperimentRunResource{}
	_ resource.ResourceWithImportState    = &ExperimentRunResource{}
	_ resource.ResourceWithUpgradeState   = &ExperimentRunResource{}
	_ resource.ResourceWithModifyPlan     = &ExperimentRunResource{}
	_ resource.ResourceWithValidateConfig = &ExperimentRunResource{}
)

const (
	defaultCreateTimeout = 12 * time.Hour
	defaultDeleteTimeout = 5 * time.Minute
)

// NewExperimentRunResource is the aml_experiment_run factory.
func NewExperimentRunResource() resource.Resource { return &ExperimentRunResource{} }

// ExperimentRunResource submits a training run and exposes its results.
type ExperimentRunResource struct{ eng *engine.Engine }

// ExperimentRunResourceModel is aml_experiment_run's state.
type ExperimentRunResourceModel struct {
	ID                   types.String   `tfsdk:"id"`
	WorkspaceID          types.String   `tfsdk:"workspace_id"`
	ExperimentName       types.String   `tfsdk:"experiment_name"`
	SourceDirectory      types.String   `tfsdk:"source_directory"`
	Script               types.String   `tfsdk:"script"`
	Command              types.List     `tfsdk:"command"`
	Arguments            types.List     `tfsdk:"arguments"`
	ComputeTarget        types.String   `tfsdk:"compute_target"`
	RunConfigurationID   types.String   `tfsdk:"run_configuration_id"`
	EnvironmentVariables types.Map      `tfsdk:"environment_variables"`
	WaitForCompletion    types.Bool     `tfsdk:"wait_for_completion"`
	AllowFailure         types.Bool     `tfsdk:"allow_failure"`
	Triggers             types.Map      `tfsdk:"triggers"`
	Tags                 types.Map      `tfsdk:"tags"`
	Timeouts             timeouts.Value `tfsdk:"timeouts"`
	RunBasedCompute      types.Object   `tfsdk:"run_based_compute"`

	RunID           types.String  `tfsdk:"run_id"`
	Status          types.String  `tfsdk:"status"`
	FailureReason   types.String  `tfsdk:"failure_reason"`
	ExitCode        types.Int64   `tfsdk:"exit_code"`
	StartTime       types.String  `tfsdk:"start_time"`
	EndTime         types.String  `tfsdk:"end_time"`
	DurationSeconds types.Float64 `tfsdk:"duration_seconds"`
	Metrics         types.Map     `tfsdk:"metrics"`
	OutputFiles     types.List    `tfsdk:"output_files"`
	MetricCount     types.Int64   `tfsdk:"metric_count"`
	Params          types.Map     `tfsdk:"params"`
	ScriptTags      types.Map     `tfsdk:"script_tags"`
	SparkAppID      types.String  `tfsdk:"spark_application_id"`
	SlurmJobID      types.String  `tfsdk:"slurm_job_id"`
	OutputFileCount types.Int64   `tfsdk:"output_file_count"`
	OutputsPath     types.String  `tfsdk:"outputs_path"`
	OutputsURI      types.String  `tfsdk:"outputs_uri"`
	LogsURI         types.String  `tfsdk:"logs_uri"`
	LogTail         types.String  `tfsdk:"log_tail"`
	LogPath         types.String  `tfsdk:"log_path"`
	SnapshotHash    types.String  `tfsdk:"snapshot_hash"`
	SnapshotFiles   types.Int64   `tfsdk:"snapshot_files"`
	SnapshotBytes   types.Int64   `tfsdk:"snapshot_bytes"`
	SnapshotChanges types.List    `tfsdk:"snapshot_changes"`

	EnvironmentHash         types.String  `tfsdk:"environment_hash"`
	EnvironmentCacheHit     types.Bool    `tfsdk:"environment_cache_hit"`
	EnvironmentBuildSeconds types.Float64 `tfsdk:"environment_build_seconds"`
}

func (r *ExperimentRunResource) Metadata(ctx context.Context, req resource.MetadataRequest, resp *resource.MetadataResponse) {
	resp.TypeName = req.ProviderTypeName + "_experiment_run"
}

func (r *ExperimentRunResource) Schema(ctx context.Context, req resource.SchemaRequest, resp *resource.SchemaResponse) {
	replaceStr := []planmodifier.String{stringplanmodifier.RequiresReplace()}
	replaceList := []planmodifier.List{listplanmodifier.RequiresReplace()}
	keepStr := []planmodifier.String{stringplanmodifier.UseStateForUnknown()}
	computedStr := func(desc string) schema.StringAttribute {
		return schema.StringAttribute{Computed: true, MarkdownDescription: desc, PlanModifiers: keepStr}
	}
	resp.Schema = schema.Schema{
		Version: 1, // 0: ids began with the workspace's directory
		MarkdownDescription: "A training run (Azure ML's `ScriptRunConfig` + `Experiment.submit` + `Run`): apply snapshots `source_directory`, " +
			"runs `script` (or `command`) on `compute_target` with a run configuration, waits, and exposes status, exit code, metrics, outputs and the log tail. " +
			"The snapshot hash is computed at plan time, so editing a file of the snapshot shows the run as replaced; files excluded by " +
			"`.amlignore` (or `.gitignore`) do not.",
		Attributes: map[string]schema.Attribute{
			"id": computedStr("`{workspace_id}/runs/{run_id}`: the run's directory in the workspace."),
			"workspace_id": schema.StringAttribute{
				Required: true, PlanModifiers: replaceStr,
				MarkdownDescription: "The `id` of the `aml_workspace` the run belongs to.",
			},
			"experiment_name": schema.StringAttribute{
				Required: true, PlanModifiers: replaceStr,
				MarkdownDescription: "Experiment the run is grouped under: up to 128 letters, digits, `.`, `-` or `_`.",
				Validators:          []validator.String{stringvalidator.RegexMatches(engine.NamePattern, "must be up to 128 letters, digits, '.', '-' or '_', starting with a letter or digit")},
			},
			"source_directory": schema.StringAttribute{
				Required: true, PlanModifiers: replaceStr,
				MarkdownDescription: "Directory snapshotted for the run (relative to Terraform's working directory, or absolute). `.amlignore`, else `.gitignore`, excludes files; `.git/` is always excluded.",
				Validators:          []validator.String{stringvalidator.LengthAtLeast(1)},
			},
			"script": schema.StringAttribute{
				Optional: true, PlanModifiers: replaceStr,
				MarkdownDescription: "Python script to run, relative to `source_directory`, with the run configuration's interpreter. Exactly one of `script` and `command`.",
				// Exactly one of script and command: ValidateConfig.
				Validators: []validator.String{stringvalidator.LengthAtLeast(1)},
			},
			"command": schema.ListAttribute{
				ElementType: types.StringType, Optional: true, PlanModifiers: replaceList,
				MarkdownDescription: "Program and arguments to run in the snapshot directory instead of a script (no shell: use `[\"bash\", \"-c\", \"...\"]` for one).",
				Validators:          []validator.List{listvalidator.SizeAtLeast(1)},
			},
			"arguments": schema.ListAttribute{
				ElementType: types.StringType, Optional: true, PlanModifiers: replaceList,
				MarkdownDescription: "Arguments appended to the script or command.",
			},
			"compute_target": schema.StringAttribute{
				Optional: true, Computed: true, PlanModifiers: replaceStr,
				Default:             stringdefault.StaticString(engine.LocalTarget),
				MarkdownDescription: "Where the run executes: `local` (default) is the machine running Terraform; the `name` of an `aml_remote_compute` or `aml_compute`; or `amlcompute` with `run_based_compute` for a pool created for this run and deleted after it.",
			},
			"run_configuration_id": schema.StringAttribute{
				Required: true, PlanModifiers: replaceStr,
				MarkdownDescription: "The `id` of an `aml_run_configuration` in the same workspace. Replacing the configuration replaces the run.",
			},
			"environment_variables": schema.MapAttribute{
				ElementType: types.StringType, Optional: true,
				PlanModifiers:       []planmodifier.Map{mapplanmodifier.RequiresReplace()},
				Validators:          []validator.Map{envNamesValidator{}},
				MarkdownDescription: "Environment variables for this run, merged over the run configuration's.",
			},
			"wait_for_completion": schema.BoolAttribute{
				Optional: true, Computed: true, Default: booldefault.StaticBool(true),
				MarkdownDescription: "Wait for the run to finish during apply (under the `create` timeout). With `false`, apply returns once the run has started and later refreshes update its status.",
			},
			"allow_failure": schema.BoolAttribute{
				Optional: true, Computed: true, Default: booldefault.StaticBool(false),
				MarkdownDescription: "With `false` (default) a run that does not complete fails the apply, showing the log tail, and the resource is tainted. With `true` the failed run is kept in state with its `status`, `failure_reason` and `exit_code`.",
			},
			"triggers": schema.MapAttribute{
				ElementType: types.StringType, Optional: true,
				PlanModifiers:       []planmodifier.Map{mapplanmodifier.RequiresReplace()},
				MarkdownDescription: "Arbitrary values; changing any forces a new run (like `random`'s `keepers`).",
			},
			"tags": schema.MapAttribute{
				ElementType: types.StringType, Optional: true,
				MarkdownDescription: "Tags stored with the run record; they update in place.",
			},
			"timeouts": timeouts.Attributes(ctx, timeouts.Opts{Create: true, Delete: true, CreateDescription: "How long apply waits for the run (default 12h); when it passes the run is canceled.", DeleteDescription: "How long destroy waits for a running run to stop (default 5m)."}),

			"run_id":         computedStr("Run id, `{experiment_name}_{unix_time}_{random}`."),
			"status":         computedStr("`NotStarted`, `Queued`, `Preparing`, `Starting`, `Running`, `Finalizing`, `Completed`, `Failed`, `CancelRequested` or `Canceled`."),
			"failure_reason": computedStr("Why a run did not complete: `setup_failed`, `nonzero_exit`, `timed_out`, `killed_by_signal`, `lost`, `canceled`; empty otherwise."),
			"exit_code": schema.Int64Attribute{
				Computed: true, MarkdownDescription: "The script's exit code (128+signal when killed by a signal); null before it exits.",
			},
			"start_time":       computedStr("When the script started (RFC 3339)."),
			"end_time":         computedStr("When the run ended (RFC 3339)."),
			"duration_seconds": schema.Float64Attribute{Computed: true, MarkdownDescription: "Seconds between start and end."},
			"metrics": schema.MapAttribute{
				ElementType: types.Float64Type, Computed: true,
				MarkdownDescription: fmt.Sprintf("Last value of each metric the run logged: `aml_run.log(name, value)`, azureml's `Run.get_context().log(...)`, "+
					"`mlflow.log_metric(...)` (with no tracking URI of the script's own), or JSON lines in `AML_METRICS_FILE`. "+
					"State keeps the first %d metric names in sorted order (`metric_count` says how many there are); the `aml_run` data source has them all.", engine.MaxStateMetrics),
			},
			"params":      schema.MapAttribute{ElementType: types.StringType, Computed: true, MarkdownDescription: paramsDescription},
			"script_tags": schema.MapAttribute{ElementType: types.StringType, Computed: true, MarkdownDescription: scriptTagsDescription},
			"spark_application_id": schema.StringAttribute{
				Computed: true, MarkdownDescription: "The Spark application id of a PySpark run (`application_...` on YARN, `app-...` on a standalone master, `local-...`); null for other runs.",
			},
			"slurm_job_id": schema.StringAttribute{
				Computed: true, MarkdownDescription: "The Slurm job id of a run on an `aml_batch_attachment`; null for other runs.",
			},
			"metric_count": schema.Int64Attribute{
				Computed: true, PlanModifiers: []planmodifier.Int64{int64planmodifier.UseStateForUnknown()},
				MarkdownDescription: "How many distinct metrics the run logged (also those not kept in `metrics`).",
			},
			"output_files": schema.ListAttribute{
				ElementType: types.StringType, Computed: true,
				MarkdownDescription: fmt.Sprintf("Files the run wrote under `outputs/`, relative to `outputs_path`, sorted; a byte of a name that is not printable UTF-8, and `%%`, "+
					"is shown as `%%XX`. State keeps the first %d (`output_file_count` says how many there are); the `aml_run` data source and `outputs_path` have them all.", engine.MaxStateOutputFiles),
			},
			"output_file_count": schema.Int64Attribute{
				Computed: true, PlanModifiers: []planmodifier.Int64{int64planmodifier.UseStateForUnknown()},
				MarkdownDescription: "How many files the run wrote under `outputs/` (also those not listed in `output_files`).",
			},
			"outputs_path": computedStr("Local directory holding the run's outputs. On a shared workspace, this machine's copy (downloaded when a machine that lacks it reads the run)."),
			"outputs_uri": computedStr("Where any machine finds the run's outputs: `s3://<bucket>/<prefix>/<workspace id>/runs/<run_id>/outputs/` on a shared workspace (uploaded when the run is collected), " +
				"`file:///<workspace directory>/runs/<run_id>/outputs/` on an embedded one."),
			"logs_uri": computedStr("Where any machine finds the run's logs (`std_log.txt`, ...), as `outputs_uri`."),
			"log_tail": schema.StringAttribute{
				Computed: true, Sensitive: true, PlanModifiers: keepStr,
				MarkdownDescription: "The last 50 lines of the run's log. Marked sensitive only so that a plan that replaces the run does not print the old run's log: " +
					"a failed apply shows these lines in its error, `terraform output -raw` prints an output of it (declare the output `sensitive = true`), " +
					"and the `aml_run` data source has it unmarked.",
			},
			"log_path": computedStr("Local path of the run's full log."),
			"snapshot_hash": schema.StringAttribute{
				Computed:            true,
				MarkdownDescription: "Hash of the snapshot manifest (path, mode, content of every file), computed at plan time; a change replaces the run.",
			},
			"snapshot_files": schema.Int64Attribute{Computed: true, MarkdownDescription: "Number of files in the snapshot."},
			"snapshot_changes": schema.ListAttribute{
				ElementType: types.StringType, Computed: true,
				MarkdownDescription: fmt.Sprintf("Why the run re-executes, known at plan time: the files of `source_directory` that differ from the snapshot of the last run of the same submission "+
					"in the workspace (the run in state, when this resource made it; same experiment, program, arguments, target, configuration and inputs), "+
					"as `changed: train.py`, `added: data/new.csv` or `removed: old.py`, in path order, the first %d and then one line counting the rest. "+
					"Empty when there is no such run or its files are the same (another input changed); a plan that does not replace the run leaves it as it is.", engine.MaxPlanChanges),
			},
			"environment_hash": computedStr("For a system-managed environment, the key of the environment the run used (definition + target platform: OS, arch, Python ABI); otherwise the run configuration's `environment_hash`."),
			"environment_cache_hit": schema.BoolAttribute{
				Computed: true, MarkdownDescription: "Whether the system-managed environment was already built (nothing installed). Null for user-managed environments.",
			},
			"environment_build_seconds": schema.Float64Attribute{
				Computed: true, MarkdownDescription: "Seconds spent building the system-managed environment (0 on a cache hit). Null for user-managed environments.",
			},
			"snapshot_bytes": schema.Int64Attribute{Computed: true, MarkdownDescription: "Total size of the snapshot's files."},
		},
		Blocks: map[string]schema.Block{
			"run_based_compute": schema.SingleNestedBlock{
				PlanModifiers:       []planmodifier.Object{objectplanmodifier.RequiresReplace()},
				MarkdownDescription: "With `compute_target = \"amlcompute\"`: the pool created for this run alone (nodes start for it and stop as soon as they are idle) and deleted when the run has ended.",
				Validators:          []validator.Object{objectvalidator.AlsoRequires(path.MatchRelative().AtName("vm_size"))},
				Attributes: map[string]schema.Attribute{
					"vm_size":   schema.StringAttribute{Optional: true, MarkdownDescription: "Node size, as `aml_compute`'s `vm_size` (required in the block).", Validators: []validator.String{vmSizeValidator{}}},
					"max_nodes": schema.Int64Attribute{Optional: true, MarkdownDescription: "Nodes of the pool (at least the run configuration's `node_count`). Default 1.", Validators: []validator.Int64{int64validator.AtLeast(1)}},
				},
			},
		},
	}
}

func (r *ExperimentRunResource) Configure(ctx context.Context, req resource.ConfigureRequest, resp *resource.ConfigureResponse) {
	r.eng = engineFromResource(req, resp)
}

// ValidateConfig ties run_based_compute to compute_target = "amlcompute".
func (r *ExperimentRunResource) ValidateConfig(ctx context.Context, req resource.ValidateConfigRequest, resp *resource.ValidateConfigResponse) {
	// The few attributes checked here are read from the raw value: decoding
	// the whole model (Config.Get) and the ExactlyOneOf validator's walks of
	// the configuration were half of this resource's validation CPU, which
	// terraform asks for twice per run in every plan.
	var attrs map[string]tftypes.Value
	if err := req.Config.Raw.As(&attrs); err != nil || attrs == nil {
		return
	}
	validateProgramChoice(attrs, &resp.Diagnostics)
	target, runBasedBlock := attrs["compute_target"], attrs["run_based_compute"]
	if !target.IsKnown() || !runBasedBlock.IsKnown() {
		return
	}
	var targetName string
	if !target.IsNull() {
		_ = target.As(&targetName)
	}
	runBased := targetName == engine.RunBasedTarget
	switch {
	case runBased && runBasedBlock.IsNull():
		resp.Diagnostics.AddAttributeError(path.Root("run_based_compute"), "Missing run_based_compute",
			`run_based_compute: compute_target = "amlcompute" creates a pool for this run; say which with a block run_based_compute { vm_size = "...", max_nodes = N }`)
	case !runBased && !runBasedBlock.IsNull():
		resp.Diagnostics.AddAttributeError(path.Root("run_based_compute"), "Unexpected run_based_compute",
			fmt.Sprintf(`run_based_compute: only used with compute_target = "amlcompute", not %q`, targetName))
	}
}

// validateProgramChoice requires exactly one of script and command, as
// stringvalidator.ExactlyOneOf on script did (same diagnostics, on script),
// once both are known.
func validateProgramChoice(attrs map[string]tftypes.Value, diags *diag.Diagnostics) {
	set := 0
	for _, name := range []string{"script", "command"} {
		v := attrs[name]
		if !v.IsKnown() {
			return
		}
		if !v.IsNull() {
			set++
		}
	}
	const choice = "one (and only one) of [script,command] is required"
	switch set {
	case 0:
		diags.AddAttributeError(path.Root("script"), "Invalid Attribute Combination", "No attribute specified when "+choice)
	case 2:
		diags.AddAttributeError(path.Root("script"), "Invalid Attribute Combination", "2 attributes specified when "+choice)
	}
}

// ModifyPlan hashes the source directory so a changed file shows as a replacement.
func (r *ExperimentRunResource) ModifyPlan(ctx context.Context, req resource.ModifyPlanRequest, resp *resource.ModifyPlanResponse) {
	if req.Plan.Raw.IsNull() || r.eng == nil {
		return
	}
	var plan ExperimentRunResourceModel
	resp.Diagnostics.Append(getRunModel(ctx, req.Plan.Raw, req.Plan.Get, &plan)...)
	if resp.Diagnostics.HasError() {
		return
	}
	if plan.SourceDirectory.IsUnknown() {
		// Known only after apply: nothing to hash yet.
		setRootAttrs(ctx, &resp.Plan, map[string]attr.Value{
			"snapshot_hash": types.StringUnknown(), "snapshot_files": types.Int64Unknown(),
			"snapshot_bytes": types.Int64Unknown(), "snapshot_changes": types.ListUnknown(types.StringType),
		}, &resp.Diagnostics)
		return
	}
	in := runPlanInputs{
		SourceDir:      plan.SourceDirectory.ValueString(),
		Script:         plan.Script.ValueString(),
		ScriptSet:      !plan.Script.IsNull() && !plan.Script.IsUnknown(),
		ProgramKnown:   !plan.Script.IsUnknown() && fullyKnown(plan.Command) && fullyKnown(plan.Arguments) && fullyKnown(plan.EnvironmentVariables),
		WorkspaceID:    plan.WorkspaceID.ValueString(),
		ComputeTarget:  plan.ComputeTarget.ValueString(),
		RunConfigID:    plan.RunConfigurationID.ValueString(),
		PlacementKnown: known(plan.WorkspaceID) && known(plan.ComputeTarget) && known(plan.RunConfigurationID),
	}
	if in.ProgramKnown {
		in.Command = stringList(ctx, plan.Command, &resp.Diagnostics)
		in.Arguments = stringList(ctx, plan.Arguments, &resp.Diagnostics)
		in.Env = stringMap(ctx, plan.EnvironmentVariables, &resp.Diagnostics)
	}
	sum, manifest, summary, err := checkRunPlan(ctx, r.eng, in)
	if err != nil {
		addEngineError(&resp.Diagnostics, summary, err)
		return
	}
	// The snapshot's attributes are set together at the end (setRootAttrs).
	sets := map[string]attr.Value{
		"snapshot_hash": types.StringValue(sum.Hash), "snapshot_files": types.Int64Value(int64(sum.Files)),
		"snapshot_bytes": types.Int64Value(sum.Bytes),
	}
	setChanges := func(changes attr.Value) {
		sets["snapshot_changes"] = changes
		setRootAttrs(ctx, &resp.Plan, sets, &resp.Diagnostics)
	}
	if !req.State.Raw.IsNull() {
		var state ExperimentRunResourceModel
		resp.Diagnostics.Append(getRunModel(ctx, req.State.Raw, req.State.Get, &state)...)
		if resp.Diagnostics.HasError() {
			setRootAttrs(ctx, &resp.Plan, sets, &resp.Diagnostics)
			return
		}
		if !state.SnapshotHash.IsNull() && state.SnapshotHash.ValueString() != sum.Hash {
			tflog.Info(ctx, "source snapshot changed; the run will be replaced", map[string]any{"old": state.SnapshotHash.ValueString(), "new": sum.Hash})
			resp.RequiresReplace = append(resp.RequiresReplace, path.Root("snapshot_hash"))
		} else if !replacedBy(plan, state) {
			// Not re-executed: the list stays what it was.
			changes := state.SnapshotChanges
			if changes.IsNull() || changes.IsUnknown() {
				changes = listValue(ctx, []string{}, &resp.Diagnostics)
			}
			setChanges(changes)
			return
		}
	}
	// A new run, or a replacement. Terraform plans the create half of a
	// replacement (and again at apply) with no prior state, so the list is
	// computed against what the workspace keeps, not against state: the last
	// run of the same submission (same experiment, source_directory, program,
	// target, configuration and inputs), which is the run in state when this
	// resource made it.
	if !(fullyKnown(plan.Command) && fullyKnown(plan.Arguments) && fullyKnown(plan.EnvironmentVariables) && fullyKnown(plan.Triggers) &&
		known(plan.WorkspaceID) && known(plan.ExperimentName) && known(plan.ComputeTarget) && known(plan.RunConfigurationID) && !plan.Script.IsUnknown()) {
		setChanges(types.ListUnknown(types.StringType))
		return
	}
	runReq := plan.request(ctx, &resp.Diagnostics)
	files, err := r.eng.SnapshotChangesSinceLast(ctx, runReq, manifest)
	if err != nil {
		files = []string{"unknown: " + err.Error()}
	}
	setChanges(listValue(ctx, files, &resp.Diagnostics))
}

// setRootAttrs sets top-level attributes of a plan in one rewrite of its raw
// value. The framework's SetAttribute walks the schema and re-encodes the whole
// object for each call, which for the run's 43 attributes cost about 1.3 ms per
// planned create (four calls); this is what those calls did, once. A value that
// does not fit the plan's type goes through SetAttribute, which words the error.
func setRootAttrs(ctx context.Context, plan *tfsdk.Plan, vals map[string]attr.Value, diags *diag.Diagnostics) {
	var shared map[string]tftypes.Value
	if err := plan.Raw.As(&shared); err == nil && shared != nil {
		// As hands out the value's own map, which the request's plan shares.
		attrs := make(map[string]tftypes.Value, len(shared))
		for k, v := range shared {
			attrs[k] = v
		}
		ok := true
		for name, v := range vals {
			tv, err := v.ToTerraformValue(ctx)
			if _, exists := attrs[name]; err != nil || !exists {
				ok = false
				break
			}
			attrs[name] = tv
		}
		if ok && tftypes.ValidateValue(plan.Raw.Type(), attrs) == nil {
			plan.Raw = tftypes.NewValue(plan.Raw.Type(), attrs)
			return
		}
	}
	for name, v := range vals {
		diags.Append(plan.SetAttribute(ctx, path.Root(name), v)...)
	}
}

// runPlanInputs is what a run's plan checks read: the program, its source
// directory and where it runs. The *Known flags say which parts are known yet.
type runPlanInputs struct {
	SourceDir                  string
	Script                     string
	ScriptSet                  bool // script is set and known
	ProgramKnown               bool // script, command, arguments and variables are known
	Command, Arguments         []string
	Env                        map[string]string
	WorkspaceID, ComputeTarget string
	RunConfigID                string
	PlacementKnown             bool
}

// checkRunPlan checks a run's program, hashes its source directory and checks
// that the run fits its target: the plan-time work of every aml_experiment_run,
// shared by ModifyPlan and the unchanged-run fast path (fastpath.go). An error
// comes with the summary of its diagnostic.
func checkRunPlan(ctx context.Context, eng *engine.Engine, in runPlanInputs) (*engine.SnapshotSummary, *snapshot.Manifest, string, error) {
	if in.ProgramKnown {
		if err := engine.CheckProgram(in.Script, in.Command, in.Arguments, in.Env); err != nil {
			return nil, nil, "Cannot run this program", err
		}
	}
	sum, manifest, err := eng.PlanSnapshot(ctx, in.SourceDir)
	if err != nil {
		return nil, nil, "Cannot snapshot source_directory", err
	}
	if in.ScriptSet {
		if err := engine.CheckScript(manifest, in.SourceDir, in.Script); err != nil {
			return nil, nil, "Script not in snapshot", err
		}
	}
	if in.PlacementKnown {
		if err := eng.CheckPlacement(ctx, in.WorkspaceID, in.ComputeTarget, in.RunConfigID); err != nil {
			return nil, nil, "Run does not fit its compute target", err
		}
	}
	return sum, manifest, "", nil
}

// replacedBy reports whether the plan changes an input that replaces the run
// (an unknown value may: it counts as a change).
func replacedBy(plan, state ExperimentRunResourceModel) bool {
	pairs := [][2]attr.Value{
		{plan.WorkspaceID, state.WorkspaceID}, {plan.ExperimentName, state.ExperimentName},
		{plan.SourceDirectory, state.SourceDirectory}, {plan.Script, state.Script},
		{plan.Command, state.Command}, {plan.Arguments, state.Arguments},
		{plan.ComputeTarget, state.ComputeTarget}, {plan.RunConfigurationID, state.RunConfigurationID},
		{plan.EnvironmentVariables, state.EnvironmentVariables}, {plan.Triggers, state.Triggers},
		{plan.RunBasedCompute, state.RunBasedCompute},
	}
	for _, p := range pairs {
		if !p[0].Equal(p[1]) {
			return true
		}
	}
	return false
}

func (m *ExperimentRunResourceModel) request(ctx context.Context, diags *diag.Diagnostics) engine.RunRequest {
	req := engine.RunRequest{
		WorkspaceID:          m.WorkspaceID.ValueString(),
		Experiment:           m.ExperimentName.ValueString(),
		SourceDirectory:      m.SourceDirectory.ValueString(),
		Script:               m.Script.ValueString(),
		Command:              stringList(ctx, m.Command, diags),
		Arguments:            stringList(ctx, m.Arguments, diags),
		ComputeTarget:        m.ComputeTarget.ValueString(),
		RunConfigID:          m.RunConfigurationID.ValueString(),
		EnvironmentVariables: stringMap(ctx, m.EnvironmentVariables, diags),
		Tags:                 stringMap(ctx, m.Tags, diags),
		Triggers:             stringMap(ctx, m.Triggers, diags),
	}
	if !m.RunBasedCompute.IsNull() && !m.RunBasedCompute.IsUnknown() {
		var rb struct {
			VMSize   types.String `tfsdk:"vm_size"`
			MaxNodes types.Int64  `tfsdk:"max_nodes"`
		}
		diags.Append(m.RunBasedCompute.As(ctx, &rb, basetypes.ObjectAsOptions{})...)
		req.RunBased = &engine.RunBasedCompute{VMSize: rb.VMSize.ValueString(), MaxNodes: int(rb.MaxNodes.ValueInt64())}
		if rb.MaxNodes.IsNull() {
			req.RunBased.MaxNodes = 1
		}
	}
	if !m.SnapshotHash.IsUnknown() && !m.SnapshotHash.IsNull() {
		req.PlannedSnapshotHash = m.SnapshotHash.ValueString()
	}
	return req
}

// fillComputed copies a run's results into the model.
func (m *ExperimentRunResourceModel) fillComputed(ctx context.Context, run *engine.Run, diags *diag.Diagnostics) {
	m.ID = types.StringValue(run.ID)
	m.RunID = types.StringValue(run.RunID)
	m.Status = types.StringValue(string(run.Status))
	m.FailureReason = types.StringValue(run.FailureReason)
	if run.ExitCode != nil {
		m.ExitCode = types.Int64Value(int64(*run.ExitCode))
	} else {
		m.ExitCode = types.Int64Null()
	}
	m.StartTime = timePtr(run.StartTime)
	m.EndTime = timePtr(run.EndTime)
	m.DurationSeconds = types.Float64Value(run.DurationSeconds)
	// Bounded: a run can log any number of metrics and files, and state (read
	// on every plan) must not grow with them.
	m.Metrics = numberMap(engine.FirstMetrics(run.Metrics, engine.MaxStateMetrics))
	m.MetricCount = types.Int64Value(int64(len(run.Metrics)))
	m.Params = mapValue(ctx, run.Params, diags)
	m.ScriptTags = mapValue(ctx, run.ScriptTags, diags)
	m.SparkAppID = optString(run.Details[engine.DetailSparkAppID])
	m.SlurmJobID = optString(run.Details[engine.DetailSlurmJobID])
	m.OutputFiles = listValue(ctx, run.OutputFiles[:min(len(run.OutputFiles), engine.MaxStateOutputFiles)], diags)
	m.OutputFileCount = types.Int64Value(int64(len(run.OutputFiles)))
	m.OutputsPath = types.StringValue(run.OutputsPath)
	m.OutputsURI = types.StringValue(run.OutputsURI)
	m.LogsURI = types.StringValue(run.LogsURI)
	m.LogTail = types.StringValue(run.LogTail)
	m.LogPath = types.StringValue(run.LogPath)
	m.SnapshotHash = types.StringValue(run.SnapshotHash)
	m.SnapshotFiles = types.Int64Value(int64(run.SnapshotFiles))
	m.SnapshotBytes = types.Int64Value(run.SnapshotBytes)
	m.EnvironmentHash = types.StringValue(run.EnvironmentHash)
	m.EnvironmentCacheHit = types.BoolPointerValue(run.EnvironmentCacheHit)
	m.EnvironmentBuildSeconds = types.Float64PointerValue(run.EnvironmentBuildSeconds)
}

// fillInputs restores configuration from the run record (import).
func (m *ExperimentRunResourceModel) fillInputs(ctx context.Context, run *engine.Run, diags *diag.Diagnostics) {
	m.WorkspaceID = types.StringValue(run.WorkspaceID)
	m.ExperimentName = types.StringValue(run.Experiment)
	m.SourceDirectory = types.StringValue(run.SourceDirectory)
	m.Script = optString(run.Script)
	m.Command = optList(ctx, run.Command, diags)
	m.Arguments = optList(ctx, run.Arguments, diags)
	m.ComputeTarget = types.StringValue(run.ComputeTarget)
	m.RunConfigurationID = types.StringValue(run.RunConfigID)
	m.EnvironmentVariables = optMap(ctx, run.EnvironmentVariables, diags)
	m.Triggers = optMap(ctx, run.Triggers, diags)
	m.Tags = optMap(ctx, run.Tags, diags)
	m.WaitForCompletion = types.BoolValue(true)
	m.AllowFailure = types.BoolValue(false)
	m.RunBasedCompute = types.ObjectNull(map[string]attr.Type{"vm_size": types.StringType, "max_nodes": types.Int64Type})
}

// fullyKnown reports whether a list or map and every element of it is known.
func fullyKnown(v interface {
	IsUnknown() bool
}) bool {
	if v.IsUnknown() {
		return false
	}
	var elems []attr.Value
	switch x := v.(type) {
	case types.List:
		elems = x.Elements()
	case types.Map:
		for _, e := range x.Elements() {
			elems = append(elems, e)
		}
	}
	for _, e := range elems {
		if e.IsUnknown() {
			return false
		}
	}
	return true
}

func known(v interface {
	IsNull() bool
	IsUnknown() bool
}) bool {
	return !v.IsNull() && !v.IsUnknown()
}

func optMap(ctx context.Context, v map[string]string, diags *diag.Diagnostics) types.Map {
	if v == nil {
		return types.MapNull(types.StringType)
	}
	return mapValue(ctx, v, diags)
}

func (r *ExperimentRunResource) Create(ctx context.Context, req resource.CreateRequest, resp *resource.CreateResponse) {
	r.create(ctx, req, resp, resp.Private)
}

// privateSetter is where create keeps the run's fingerprint: the response's
// private state, or the apply fast path's (createRunApply).
type privateSetter interface {
	SetKey(context.Context, string, []byte) diag.Diagnostics
}

// create is Create, with the private state it writes to given apart.
func (r *ExperimentRunResource) create(ctx context.Context, req resource.CreateRequest, resp *resource.CreateResponse, private privateSetter) {
	var plan ExperimentRunResourceModel
	resp.Diagnostics.Append(getRunModel(ctx, req.Plan.Raw, req.Plan.Get, &plan)...)
	if resp.Diagnostics.HasError() {
		return
	}
	timeout, d := plan.Timeouts.Create(ctx, defaultCreateTimeout)
	resp.Diagnostics.Append(d...)
	runReq := plan.request(ctx, &resp.Diagnostics)
	if resp.Diagnostics.HasError() {
		return
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()

	runReq.Waited = plan.WaitForCompletion.ValueBool()
	run, err := r.eng.SubmitRun(ctx, runReq)
	if err != nil && run == nil {
		addEngineError(&resp.Diagnostics, "Cannot submit run", err)
		return
	}
	if run.Adopted {
		tflog.Info(ctx, "adopted a run submitted by an interrupted apply", map[string]any{"run_id": run.RunID})
		resp.Diagnostics.AddWarning("Adopted an earlier run",
			fmt.Sprintf("Run %s was submitted by an earlier apply that was interrupted before Terraform saved it; this apply adopted it instead of submitting the same run twice.", run.RunID))
	}
	if err == nil && plan.WaitForCompletion.ValueBool() {
		var waited *engine.Run
		// TF_LOG_PROVIDER=INFO shows a run's progress: each status, the last
		// log line every few seconds, and where the full log is. (Terraform
		// reads every line a provider logs, whatever TF_LOG says, so the wait
		// adds none of its own: the first line gives its timeout.)
		waited, err = r.eng.WaitRunProgress(ctx, run.ID, func(p engine.Progress) {
			fields := map[string]any{"run_id": p.RunID, "status": string(p.Status)}
			if p.LogPath != "" {
				fields["log_path"] = p.LogPath
			}
			if p.First {
				fields["timeout"] = timeout.String()
			}
			tflog.Info(ctx, p.Message(), fields)
		})
		if waited != nil {
			run = waited
		} else if err != nil {
			addEngineError(&resp.Diagnostics, "Lost track of run "+run.RunID, err)
			return
		}
	}
	if !plan.WaitForCompletion.ValueBool() {
		tflog.Info(ctx, fmt.Sprintf("run %s: %s on %s, not waited for (wait_for_completion = false); log: %s", run.RunID, run.Status, run.ComputeTarget, run.LogPath),
			map[string]any{"run_id": run.RunID, "status": string(run.Status), "log_path": run.LogPath})
	}
	plan.fillComputed(ctx, run, &resp.Diagnostics)
	if plan.SnapshotChanges.IsUnknown() {
		plan.SnapshotChanges = listValue(ctx, []string{}, &resp.Diagnostics) // source_directory was unknown at plan
	}
	var failed *engine.RunFailedError
	switch {
	case err == nil:
	case errors.As(err, &failed) && plan.AllowFailure.ValueBool():
		resp.Diagnostics.AddWarning("Run did not complete (allow_failure = true)", err.Error())
	default:
		// Saving state with an error taints the resource: the next apply replaces it.
		resp.Diagnostics.AddError(fmt.Sprintf("Run %s did not complete", run.RunID), err.Error())
	}
	resp.Diagnostics.Append(setRunModel(ctx, &resp.State, &plan)...)
	if ackErr := r.eng.AcknowledgeRun(context.WithoutCancel(ctx), run.ID); ackErr != nil {
		resp.Diagnostics.AddWarning("Could not mark run as tracked", ackErr.Error())
	}
	// The record as the next refresh reads it: if it gives the same results,
	// its fingerprint lets that refresh keep this state as it is.
	if fresh, err := r.eng.ReadRun(context.WithoutCancel(ctx), run.ID); err == nil {
		again := plan
		again.fillComputed(ctx, fresh, &diag.Diagnostics{})
		if reflect.DeepEqual(again, plan) {
			setRunFingerprint(ctx, private, runFingerprint(fresh), &resp.Diagnostics)
		}
	}
}

func (r *ExperimentRunResource) Read(ctx context.Context, req resource.ReadRequest, resp *resource.ReadResponse) {
	var id types.String
	resp.Diagnostics.Append(req.State.GetAttribute(ctx, path.Root("id"), &id)...)
	if resp.Diagnostics.HasError() {
		return
	}
	run, err := r.eng.ReadRun(ctx, id.ValueString())
	if engine.IsNotFound(err) {
		resp.State.RemoveResource(ctx)
		return
	}
	if err != nil {
		addEngineError(&resp.Diagnostics, "Cannot read run", err)
		return
	}
	var state ExperimentRunResourceModel
	resp.Diagnostics.Append(getRunModel(ctx, req.State.Raw, req.State.Get, &state)...)
	if resp.Diagnostics.HasError() {
		return
	}
	if state.WorkspaceID.IsNull() {
		state.fillInputs(ctx, run, &resp.Diagnostics) // import
		state.Timeouts = timeouts.Value{Object: types.ObjectNull(state.Timeouts.AttributeTypes(ctx))}
	}
	if run.OutputsGone {
		resp.Diagnostics.AddAttributeWarning(path.Root("output_files"), "Run outputs are gone",
			fmt.Sprintf("The outputs directory of run %s, %s, was removed outside Terraform, so output_files is now empty. "+
				"The run is not executed again for this; to run it again, use `terraform apply -replace` or change its triggers.", run.RunID, run.OutputsPath))
	}
	state.fillComputed(ctx, run, &resp.Diagnostics)
	if state.SnapshotChanges.IsNull() {
		state.SnapshotChanges = listValue(ctx, []string{}, &resp.Diagnostics) // imported, or kept by an earlier version
	}
	resp.Diagnostics.Append(setRunModel(ctx, &resp.State, &state)...)
	// The next refresh keeps this state as it is while the record stays the
	// same (fastServer.ReadResource).
	setRunFingerprint(ctx, resp.Private, runFingerprint(run), &resp.Diagnostics)
}

// privateRunKey is the private-state key of the fingerprint of the run record
// the state's results were last written from.
const privateRunKey = "run_record"

// runFingerprint is a digest of everything ReadRun returned for a run, as a
// JSON string (private state values are JSON); nil when it cannot be made.
func runFingerprint(run *engine.Run) []byte {
	b, err := json.Marshal(run)
	if err != nil {
		return nil
	}
	sum := sha256.Sum256(b)
	return []byte(`"` + hex.EncodeToString(sum[:]) + `"`)
}

// setRunFingerprint records fp beside the state just written (nothing when fp
// is nil: the next refresh then takes the full path).
func setRunFingerprint(ctx context.Context, private privateSetter, fp []byte, diags *diag.Diagnostics) {
	if fp == nil || private == nil {
		return
	}
	diags.Append(private.SetKey(ctx, privateRunKey, fp)...)
}

// Update changes only what does not re-run anything: tags, wait_for_completion,
// allow_failure and timeouts. Results stay as they were planned.
func (r *ExperimentRunResource) Update(ctx context.Context, req resource.UpdateRequest, resp *resource.UpdateResponse) {
	var plan, state ExperimentRunResourceModel
	resp.Diagnostics.Append(getRunModel(ctx, req.Plan.Raw, req.Plan.Get, &plan)...)
	resp.Diagnostics.Append(getRunModel(ctx, req.State.Raw, req.State.Get, &state)...)
	if resp.Diagnostics.HasError() {
		return
	}
	tags := stringMap(ctx, plan.Tags, &resp.Diagnostics)
	if _, err := r.eng.SetRunTags(ctx, state.ID.ValueString(), tags); err != nil {
		addEngineError(&resp.Diagnostics, "Cannot update run tags", err)
		return
	}
	state.Tags = plan.Tags
	state.WaitForCompletion = plan.WaitForCompletion
	state.AllowFailure = plan.AllowFailure
	state.Timeouts = plan.Timeouts
	resp.Diagnostics.Append(setRunModel(ctx, &resp.State, &state)...)
}

// Delete cancels a running run; the record stays in the workspace as history.
func (r *ExperimentRunResource) Delete(ctx context.Context, req resource.DeleteRequest, resp *resource.DeleteResponse) {
	var state ExperimentRunResourceModel
	resp.Diagnostics.Append(req.State.Get(ctx, &state)...)
	if resp.Diagnostics.HasError() {
		return
	}
	ctx, cancel := withTimeout(ctx, state.Timeouts.Delete, defaultDeleteTimeout, &resp.Diagnostics)
	defer cancel()
	if err := r.eng.ReleaseRun(ctx, state.ID.ValueString()); err != nil {
		addEngineError(&resp.Diagnostics, "Cannot cancel run", err)
	}
}

// ImportState takes "{workspace_id}/runs/{run_id}".
func (r *ExperimentRunResource) ImportState(ctx context.Context, req resource.ImportStateRequest, resp *resource.ImportStateResponse) {
	importChildID(ctx, req, resp, engine.ParseRunID, "{workspace_id}/runs/{run_id}", "0f8fad5b-d9cb-469f-a165-70867728950e/runs/iris_1732800000_1a2b3c4d")
}

// UpgradeState moves state of version 0 to ids that name the workspace by its id.
func (r *ExperimentRunResource) UpgradeState(ctx context.Context) map[int64]resource.StateUpgrader {
	return map[int64]resource.StateUpgrader{0: {StateUpgrader: upgradeIDs(func() *engine.Engine { return r.eng })}}
}
