package provider

import (
	"context"
	"encoding/json"
	"strings"

	"github.com/hashicorp/terraform-plugin-framework-validators/int64validator"
	"github.com/hashicorp/terraform-plugin-framework-validators/listvalidator"
	"github.com/hashicorp/terraform-plugin-framework-validators/stringvalidator"
	"github.com/hashicorp/terraform-plugin-framework/attr"
	"github.com/hashicorp/terraform-plugin-framework/diag"
	"github.com/hashicorp/terraform-plugin-framework/resource"
	"github.com/hashicorp/terraform-plugin-framework/resource/schema"
	"github.com/hashicorp/terraform-plugin-framework/resource/schema/booldefault"
	"github.com/hashicorp/terraform-plugin-framework/resource/schema/int64default"
	"github.com/hashicorp/terraform-plugin-framework/resource/schema/int64planmodifier"
	"github.com/hashicorp/terraform-plugin-framework/resource/schema/mapplanmodifier"
	"github.com/hashicorp/terraform-plugin-framework/resource/schema/objectplanmodifier"
	"github.com/hashicorp/terraform-plugin-framework/resource/schema/planmodifier"
	"github.com/hashicorp/terraform-plugin-framework/resource/schema/stringdefault"
	"github.com/hashicorp/terraform-plugin-framework/resource/schema/stringplanmodifier"
	"github.com/hashicorp/terraform-plugin-framework/schema/validator"
	"github.com/hashicorp/terraform-plugin-framework/types"
	"github.com/hashicorp/terraform-plugin-framework/types/basetypes"
	"github.com/hashicorp/terraform-plugin-log/tflog"

	"github.com/openaml/terraform-provider-aml/internal/engine"
	"github.com/openaml/terraform-provider-aml/internal/engine/env"
)

var (
	_ resource.ResourceWithConfigure      = &RunConfigurationResource{}
	_ resource.ResourceWithImportState    = &RunConfigurationResource{}
	_ resource.ResourceWithUpgradeState   = &RunConfigurationResource{}
	_ resource.ResourceWithValidateConfig = &RunConfigurationResource{}
)

// NewRunConfigurationResource is the aml_run_configuration factory.
func NewRunConfigurationResource() resource.Resource { return &RunConfigurationResource{} }

// RunConfigurationResource stores a run configuration in a workspace.
type RunConfigurationResource struct{ eng *engine.Engine }

// RunConfigurationResourceModel is aml_run_configuration's state.
type RunConfigurationResourceModel struct {
	ID                    types.String `tfsdk:"id"`
	WorkspaceID           types.String `tfsdk:"workspace_id"`
	Name                  types.String `tfsdk:"name"`
	Framework             types.String `tfsdk:"framework"`
	Communicator          types.String `tfsdk:"communicator"`
	NodeCount             types.Int64  `tfsdk:"node_count"`
	Environment           types.Object `tfsdk:"environment"`
	EnvironmentVariables  types.Map    `tfsdk:"environment_variables"`
	MaxRunDurationSeconds types.Int64  `tfsdk:"max_run_duration_seconds"`
	EnvironmentHash       types.String `tfsdk:"environment_hash"`
	Spark                 types.Object `tfsdk:"spark"`
	Slurm                 types.Object `tfsdk:"slurm"`
}

var slurmTypes = map[string]attr.Type{
	"cpus_per_node": types.Int64Type, "memory_per_node": types.StringType, "gpus_per_node": types.Int64Type,
	"sbatch_options": types.ListType{ElemType: types.StringType}, "max_retries": types.Int64Type,
}

type slurmModel struct {
	CPUsPerNode   types.Int64  `tfsdk:"cpus_per_node"`
	MemoryPerNode types.String `tfsdk:"memory_per_node"`
	GPUsPerNode   types.Int64  `tfsdk:"gpus_per_node"`
	SbatchOptions types.List   `tfsdk:"sbatch_options"`
	MaxRetries    types.Int64  `tfsdk:"max_retries"`
}

func (m *RunConfigurationResourceModel) slurmResources(ctx context.Context, diags *diag.Diagnostics) *engine.SlurmResources {
	if m.Slurm.IsNull() || m.Slurm.IsUnknown() {
		return nil
	}
	var v slurmModel
	diags.Append(m.Slurm.As(ctx, &v, basetypes.ObjectAsOptions{})...)
	return &engine.SlurmResources{
		CPUsPerNode: int(v.CPUsPerNode.ValueInt64()), MemoryPerNode: v.MemoryPerNode.ValueString(), GPUsPerNode: int(v.GPUsPerNode.ValueInt64()),
		SbatchOptions: stringList(ctx, v.SbatchOptions, diags), MaxRetries: int(v.MaxRetries.ValueInt64()),
	}
}

var sparkTypes = map[string]attr.Type{"configuration": types.MapType{ElemType: types.StringType}}

func (m *RunConfigurationResourceModel) sparkConfig(ctx context.Context, diags *diag.Diagnostics) *engine.SparkConfig {
	if m.Spark.IsNull() || m.Spark.IsUnknown() {
		return nil
	}
	var v struct {
		Configuration types.Map `tfsdk:"configuration"`
	}
	diags.Append(m.Spark.As(ctx, &v, basetypes.ObjectAsOptions{})...)
	return &engine.SparkConfig{Configuration: stringMap(ctx, v.Configuration, diags)}
}

type environmentModel struct {
	Python types.Object `tfsdk:"python"`
	Docker types.Object `tfsdk:"docker"`
}

type pythonModel struct {
	UserManagedDependencies types.Bool   `tfsdk:"user_managed_dependencies"`
	InterpreterPath         types.String `tfsdk:"interpreter_path"`
	CondaDependencies       types.Object `tfsdk:"conda_dependencies"`
}

type condaModel struct {
	PythonVersion types.String `tfsdk:"python_version"`
	Channels      types.List   `tfsdk:"channels"`
	CondaPackages types.List   `tfsdk:"conda_packages"`
	PipPackages   types.List   `tfsdk:"pip_packages"`
	PipOptions    types.Object `tfsdk:"pip_options"`
}

type pipOptionsModel struct {
	IndexURL       types.String `tfsdk:"index_url"`
	ExtraIndexURLs types.List   `tfsdk:"extra_index_urls"`
	FindLinks      types.List   `tfsdk:"find_links"`
	NoIndex        types.Bool   `tfsdk:"no_index"`
}

type dockerModel struct {
	Enabled      types.Bool   `tfsdk:"enabled"`
	BaseImage    types.String `tfsdk:"base_image"`
	ShmSize      types.String `tfsdk:"shm_size"`
	Network      types.String `tfsdk:"network"`
	GPUs         types.String `tfsdk:"gpus"`
	Arguments    types.List   `tfsdk:"arguments"`
	RawArguments types.List   `tfsdk:"raw_arguments"`
	Registry     types.Object `tfsdk:"registry"`
}

type registryModel struct {
	Address  types.String `tfsdk:"address"`
	Username types.String `tfsdk:"username"`
	Password types.String `tfsdk:"password"`
}

var (
	strList         = types.ListType{ElemType: types.StringType}
	pipOptionsTypes = map[string]attr.Type{"index_url": types.StringType, "extra_index_urls": strList, "find_links": strList, "no_index": types.BoolType}
	condaTypes      = map[string]attr.Type{
		"python_version": types.StringType, "channels": strList, "conda_packages": strList, "pip_packages": strList,
		"pip_options": types.ObjectType{AttrTypes: pipOptionsTypes},
	}
	pythonTypes = map[string]attr.Type{
		"user_managed_dependencies": types.BoolType, "interpreter_path": types.StringType,
		"conda_dependencies": types.ObjectType{AttrTypes: condaTypes},
	}
	registryTypes = map[string]attr.Type{"address": types.StringType, "username": types.StringType, "password": types.StringType}
	dockerTypes   = map[string]attr.Type{
		"enabled": types.BoolType, "base_image": types.StringType, "shm_size": types.StringType, "network": types.StringType,
		"gpus": types.StringType, "arguments": strList, "raw_arguments": strList, "registry": types.ObjectType{AttrTypes: registryTypes},
	}
	environmentTypes = map[string]attr.Type{
		"python": types.ObjectType{AttrTypes: pythonTypes},
		"docker": types.ObjectType{AttrTypes: dockerTypes},
	}
)

func (r *RunConfigurationResource) Metadata(ctx context.Context, req resource.MetadataRequest, resp *resource.MetadataResponse) {
	resp.TypeName = req.ProviderTypeName + "_run_configuration"
}

func oneOfDescription(values []string) string {
	quoted := make([]string, len(values))
	for i, v := range values {
		quoted[i] = "`" + v + "`"
	}
	return strings.Join(quoted, ", ")
}

func (r *RunConfigurationResource) Schema(ctx context.Context, req resource.SchemaRequest, resp *resource.SchemaResponse) {
	// Everything that changes what a run executes forces replacement, so the runs
	// that use this configuration show in the plan as replaced too.
	replace := []planmodifier.String{stringplanmodifier.RequiresReplace()}
	resp.Schema = schema.Schema{
		Version: 1, // 0: ids began with the workspace's directory
		MarkdownDescription: "A run configuration (Azure ML's `RunConfiguration`): framework, communicator, node count, Python environment, " +
			"environment variables and maximum duration, stored in a workspace and referenced by `aml_experiment_run`. " +
			"Changing anything that affects what a run executes replaces the configuration and, through `run_configuration_id`, " +
			"every run that uses it; `max_run_duration_seconds` updates in place.",
		Attributes: map[string]schema.Attribute{
			"id": schema.StringAttribute{
				Computed:            true,
				MarkdownDescription: "`{workspace_id}/runconfigs/{name}`.",
				PlanModifiers:       []planmodifier.String{stringplanmodifier.UseStateForUnknown()},
			},
			"workspace_id": schema.StringAttribute{
				Required:            true,
				MarkdownDescription: "The `id` of the `aml_workspace` that stores the configuration.",
				PlanModifiers:       replace,
			},
			"name": schema.StringAttribute{
				Required:            true,
				MarkdownDescription: "Name, unique in the workspace: up to 128 letters, digits, `.`, `-` or `_`.",
				Validators:          []validator.String{stringvalidator.RegexMatches(engine.NamePattern, "must be up to 128 letters, digits, '.', '-' or '_', starting with a letter or digit")},
				PlanModifiers:       replace,
			},
			"framework": schema.StringAttribute{
				Optional: true, Computed: true,
				Default:             stringdefault.StaticString("Python"),
				MarkdownDescription: "The framework: one of " + oneOfDescription(engine.Frameworks) + ". Default `Python`.",
				Validators:          []validator.String{stringvalidator.OneOf(engine.Frameworks...)},
				PlanModifiers:       replace,
			},
			"communicator": schema.StringAttribute{
				Optional: true, Computed: true,
				Default:             stringdefault.StaticString("None"),
				MarkdownDescription: "How the nodes of a distributed run talk: one of " + oneOfDescription(engine.Communicators) + ". Default `None`.",
				Validators:          []validator.String{stringvalidator.OneOf(engine.Communicators...)},
				PlanModifiers:       replace,
			},
			"node_count": schema.Int64Attribute{
				Optional: true, Computed: true,
				Default:             int64default.StaticInt64(1),
				MarkdownDescription: "Number of nodes a run uses. Default 1. The `local` target runs one node.",
				Validators:          []validator.Int64{int64validator.AtLeast(1)},
				PlanModifiers:       []planmodifier.Int64{int64planmodifier.RequiresReplace()},
			},
			"environment_variables": schema.MapAttribute{
				ElementType:         types.StringType,
				Optional:            true,
				MarkdownDescription: "Environment variables for every run; a run's own `environment_variables` override them.",
				Validators:          []validator.Map{envNamesValidator{}},
				PlanModifiers:       []planmodifier.Map{mapplanmodifier.RequiresReplace()},
			},
			"max_run_duration_seconds": schema.Int64Attribute{
				Optional:            true,
				MarkdownDescription: "Runs longer than this are stopped (SIGTERM, then SIGKILL) and fail with `failure_reason = \"timed_out\"`. Unset: no limit. Updates in place.",
				Validators:          []validator.Int64{int64validator.AtLeast(1)},
			},
			"environment_hash": schema.StringAttribute{
				Computed:            true,
				MarkdownDescription: "Hash of the environment definition (package order does not count). Put it in a run's `triggers` to re-run on environment changes explicitly.",
				PlanModifiers:       []planmodifier.String{stringplanmodifier.UseStateForUnknown()},
			},
		},
		Blocks: map[string]schema.Block{
			"environment": environmentBlock(),
			"slurm": schema.SingleNestedBlock{
				MarkdownDescription: "Per-run resources of runs on an `aml_batch_attachment` (Slurm): per node, as one task per node gets them.",
				PlanModifiers:       []planmodifier.Object{objectplanmodifier.RequiresReplace()},
				Attributes: map[string]schema.Attribute{
					"cpus_per_node":   schema.Int64Attribute{Optional: true, MarkdownDescription: "CPUs of each node's task (`--cpus-per-task`).", Validators: []validator.Int64{int64validator.AtLeast(1)}},
					"memory_per_node": schema.StringAttribute{Optional: true, MarkdownDescription: "Memory per node (`--mem`), e.g. `16G`."},
					"gpus_per_node":   schema.Int64Attribute{Optional: true, MarkdownDescription: "GPUs per node (`--gres=gpu:N`).", Validators: []validator.Int64{int64validator.AtLeast(1)}},
					"sbatch_options":  schema.ListAttribute{ElementType: types.StringType, Optional: true, MarkdownDescription: "More `sbatch` options, e.g. `--constraint=a100`; those the provider sets (job name, nodes, tasks, output, requeue) are refused."},
					"max_retries": schema.Int64Attribute{
						Optional: true, Validators: []validator.Int64{int64validator.AtLeast(0)},
						MarkdownDescription: "How often a run whose node failed is requeued (same run id, `AML_ATTEMPT` counting, same outputs directory so checkpoints survive). Default 0; a preempted run is requeued at least once.",
					},
				},
			},
			"spark": schema.SingleNestedBlock{
				MarkdownDescription: "Spark settings of PySpark runs (`framework = \"PySpark\"`, on an `aml_hdinsight_attachment`).",
				PlanModifiers:       []planmodifier.Object{objectplanmodifier.RequiresReplace()},
				Attributes: map[string]schema.Attribute{
					"configuration": schema.MapAttribute{
						ElementType: types.StringType, Optional: true,
						MarkdownDescription: "`--conf` pairs for spark-submit (keys start with `spark.`), merged over the defaults (`spark.yarn.maxAppAttempts = 1`, the event log in the run's logs).",
					},
				},
			},
		},
	}
}

// environmentBlock is the run configuration's environment. Blocks, not
// object-valued attributes: Terraform drops an unknown key of an object value
// before the provider sees it (a typo such as shm_sise would pass silently),
// while an unknown argument in a block is an error at validate.
func environmentBlock() schema.SingleNestedBlock {
	pipOptions := schema.SingleNestedBlock{
		MarkdownDescription: "Package index settings.",
		Attributes: map[string]schema.Attribute{
			"index_url":        schema.StringAttribute{Optional: true, MarkdownDescription: "Replaces the default package index."},
			"extra_index_urls": schema.ListAttribute{ElementType: types.StringType, Optional: true, MarkdownDescription: "Additional indexes."},
			"find_links":       schema.ListAttribute{ElementType: types.StringType, Optional: true, MarkdownDescription: "Directories or pages of wheels."},
			"no_index":         schema.BoolAttribute{Optional: true, MarkdownDescription: "Install from `find_links` only (pip's `--no-index`)."},
		},
	}
	conda := schema.SingleNestedBlock{
		MarkdownDescription: "Python version and packages of a system-managed environment. Package order does not matter; a changed pin is a new environment.",
		Attributes: map[string]schema.Attribute{
			"python_version": schema.StringAttribute{Optional: true, MarkdownDescription: "Python version, e.g. `3.11`: an interpreter on the target must provide it (the error lists those found). Default: the target's `python3`."},
			"channels":       schema.ListAttribute{ElementType: types.StringType, Optional: true, MarkdownDescription: "Conda channels, in priority order."},
			"conda_packages": schema.ListAttribute{ElementType: types.StringType, Optional: true, MarkdownDescription: "Conda package specs."},
			"pip_packages": schema.ListAttribute{
				ElementType: types.StringType, Optional: true,
				MarkdownDescription: "pip requirement specs (PEP 508), e.g. `scikit-learn==1.5.*`. Options such as `--index-url` belong in `pip_options`.",
				Validators:          []validator.List{listvalidator.ValueStringsAre(stringvalidator.RegexMatches(notOption, "must be a requirement, not a pip option; put index settings in pip_options"))},
			},
		},
		Blocks: map[string]schema.Block{"pip_options": pipOptions},
	}
	python := schema.SingleNestedBlock{
		MarkdownDescription: "Who provides the interpreter and packages.",
		Attributes: map[string]schema.Attribute{
			"user_managed_dependencies": schema.BoolAttribute{
				Optional: true, Computed: true,
				Default: booldefault.StaticBool(false),
				MarkdownDescription: "`true`: run with `interpreter_path` as it is on the target. `false` (default, as Azure): the provider builds an environment " +
					"from `conda_dependencies` once per environment hash on each target (with `uv` when the target has it, else `python -m venv` + pip; " +
					"conda, mamba or micromamba for `conda_packages`) and reuses it for every later run.",
			},
			"interpreter_path": schema.StringAttribute{
				Optional:            true,
				MarkdownDescription: "Interpreter for user-managed environments: a name looked up on `PATH` or a path. Default `" + env.DefaultInterpreter + "`.",
				Validators:          []validator.String{stringvalidator.LengthAtLeast(1)},
			},
		},
		Blocks: map[string]schema.Block{"conda_dependencies": conda},
	}
	docker := schema.SingleNestedBlock{
		MarkdownDescription: "Run inside a container of an image, as Azure ML does. The target needs a Docker engine that the target's user may use (checked before the run is submitted; " +
			"the engine is the one `DOCKER_HOST` names in the target's environment, else the default socket). The snapshot is mounted at `" + env.ContainerRunDir + "` as the working directory, " +
			"with `outputs/`, `logs/`, the `AML_*` variables and the `aml_run` helper as on the host; the container runs as the host user (uid:gid) that owns the run directory. " +
			"System-managed (`python.user_managed_dependencies = false`): the packages are built into an image `" + env.ImageRepository + ":<key>` once per environment hash and base image, " +
			"`FROM base_image` (`docker build --network host`), and reused by every later run; user-managed: the image's own interpreter (`interpreter_path`, default `" + env.DefaultInterpreter + "`).",
		Attributes: map[string]schema.Attribute{
			"enabled":    schema.BoolAttribute{Optional: true, Computed: true, Default: booldefault.StaticBool(false), MarkdownDescription: "Run in Docker. Default `false`."},
			"base_image": schema.StringAttribute{Optional: true, MarkdownDescription: "Image to run in (or to build the environment's image from); required when `enabled`. It needs `python3` with the `venv` module for system-managed environments."},
			"shm_size":   schema.StringAttribute{Optional: true, MarkdownDescription: "Shared memory size (`--shm-size`): a number with an optional unit `b`, `k`, `m` or `g`. Default `2g`."},
			"network":    schema.StringAttribute{Optional: true, MarkdownDescription: "`--network`: `host`, `none`, `bridge` or the name of a network the engine has. Default: the engine's default."},
			"gpus": schema.StringAttribute{Optional: true, MarkdownDescription: "`--gpus`: `all`, `none` or a number. Default: all of the host's GPUs when it has any (`nvidia-smi`), none otherwise; " +
				"asking for GPUs on a host without them fails the run with a message."},
			"arguments": schema.ListAttribute{ElementType: types.StringType, Optional: true, MarkdownDescription: "Extra `docker run` flags, each checked against a list that cannot undo the container's isolation: " +
				oneOfDescription(env.AllowedDockerFlagNames()) + " (`--flag=value` or `--flag`, `value`)."},
			"raw_arguments": schema.ListAttribute{ElementType: types.StringType, Optional: true, MarkdownDescription: "Extra `docker run` flags passed **as they are**, after `arguments` " +
				"(for `--volume`, `--device`, `--ipc=host`, `--privileged` and the like). They can give the script the host: use them only for code you trust."},
		},
		Blocks: map[string]schema.Block{"registry": schema.SingleNestedBlock{
			MarkdownDescription: "Credentials for a private `base_image`, used to pull it when the target does not have it (through a Docker configuration of the run's own, removed after the pull; the target's `~/.docker` is not touched).",
			Attributes: map[string]schema.Attribute{
				"address":  schema.StringAttribute{Optional: true, MarkdownDescription: "Registry host, e.g. `registry.example.com:5000`."},
				"username": schema.StringAttribute{Optional: true, MarkdownDescription: "User name."},
				"password": schema.StringAttribute{Optional: true, Sensitive: true, MarkdownDescription: "Password or token. Kept in the workspace store (mode 0600) like SSH credentials; never in the environment hash, a run's files, a log or a diagnostic. A new password updates the configuration in place: no run re-executes."},
			},
		}},
	}
	return schema.SingleNestedBlock{
		MarkdownDescription: "The Python environment. Omitted means system-managed: a virtual environment of the target's default `python3`, with nothing installed.",
		PlanModifiers: []planmodifier.Object{objectplanmodifier.RequiresReplaceIf(environmentChanged,
			"Changing the environment replaces the configuration (and the runs that use it); a new registry password alone updates it in place.",
			"Changing the environment replaces the configuration (and the runs that use it); a new registry password alone updates it in place.")},
		Blocks: map[string]schema.Block{"python": python, "docker": docker},
	}
}

// environmentChanged: anything but the registry password (a rotated secret
// runs nothing again) replaces the configuration.
func environmentChanged(ctx context.Context, req planmodifier.ObjectRequest, resp *objectplanmodifier.RequiresReplaceIfFuncResponse) {
	resp.RequiresReplace = true
	if req.StateValue.IsNull() || req.PlanValue.IsNull() || req.PlanValue.IsUnknown() {
		return
	}
	if tv, err := req.PlanValue.ToTerraformValue(ctx); err != nil || !tv.IsFullyKnown() {
		return
	}
	var diags diag.Diagnostics
	before := environmentFromModel(ctx, req.StateValue, &diags)
	after := environmentFromModel(ctx, req.PlanValue, &diags)
	if diags.HasError() {
		return
	}
	same := func(a, b env.Environment) bool {
		ja, _ := json.Marshal(withoutPassword(a))
		jb, _ := json.Marshal(withoutPassword(b))
		return string(ja) == string(jb)
	}
	resp.RequiresReplace = !same(before, after)
}

func withoutPassword(e env.Environment) env.Environment {
	if e.Docker != nil {
		d := e.Docker.WithoutSecrets()
		e.Docker = &d
	}
	return e
}

func (r *RunConfigurationResource) Configure(ctx context.Context, req resource.ConfigureRequest, resp *resource.ConfigureResponse) {
	r.eng = engineFromResource(req, resp)
}

// ValidateConfig checks cross-attribute rules at plan time.
func (r *RunConfigurationResource) ValidateConfig(ctx context.Context, req resource.ValidateConfigRequest, resp *resource.ValidateConfigResponse) {
	var m RunConfigurationResourceModel
	resp.Diagnostics.Append(req.Config.Get(ctx, &m)...)
	if resp.Diagnostics.HasError() {
		return
	}
	if tv, err := m.Environment.ToTerraformValue(ctx); err != nil || !tv.IsFullyKnown() {
		return // checked again at apply
	}
	e := environmentFromModel(ctx, m.Environment, &resp.Diagnostics)
	if resp.Diagnostics.HasError() {
		return
	}
	if err := e.Validate(); err != nil {
		addEngineError(&resp.Diagnostics, "Invalid run configuration", err)
	}
	if !m.Framework.IsUnknown() {
		fw := m.Framework.ValueString()
		if m.Framework.IsNull() {
			fw = "Python"
		}
		if err := engine.CheckSparkConfig(fw, m.sparkConfig(ctx, &resp.Diagnostics)); err != nil {
			addEngineError(&resp.Diagnostics, "Invalid run configuration", err)
		}
	}
	if tv, err := m.Slurm.ToTerraformValue(ctx); err == nil && tv.IsFullyKnown() {
		if err := engine.CheckSlurmResources(m.slurmResources(ctx, &resp.Diagnostics)); err != nil {
			addEngineError(&resp.Diagnostics, "Invalid run configuration", err)
		}
	}
}

func (m *RunConfigurationResourceModel) spec(ctx context.Context, diags *diag.Diagnostics) engine.RunConfigSpec {
	s := engine.RunConfigSpec{
		Name:                  m.Name.ValueString(),
		Framework:             m.Framework.ValueString(),
		Communicator:          m.Communicator.ValueString(),
		NodeCount:             int(m.NodeCount.ValueInt64()),
		Environment:           environmentFromModel(ctx, m.Environment, diags),
		EnvironmentVariables:  stringMap(ctx, m.EnvironmentVariables, diags),
		MaxRunDurationSeconds: m.MaxRunDurationSeconds.ValueInt64(),
		Spark:                 m.sparkConfig(ctx, diags),
		Slurm:                 m.slurmResources(ctx, diags),
	}
	return s
}

func (m *RunConfigurationResourceModel) fill(ctx context.Context, rc *engine.RunConfig, diags *diag.Diagnostics) {
	m.ID = types.StringValue(rc.ID)
	m.WorkspaceID = types.StringValue(rc.WorkspaceID)
	m.Name = types.StringValue(rc.Spec.Name)
	m.Framework = types.StringValue(rc.Spec.Framework)
	m.Communicator = types.StringValue(rc.Spec.Communicator)
	m.NodeCount = types.Int64Value(int64(rc.Spec.NodeCount))
	m.Environment = environmentToModel(ctx, rc.Spec.Environment, diags)
	if len(rc.Spec.EnvironmentVariables) > 0 || !m.EnvironmentVariables.IsNull() {
		m.EnvironmentVariables = mapValue(ctx, rc.Spec.EnvironmentVariables, diags)
	}
	if rc.Spec.MaxRunDurationSeconds > 0 {
		m.MaxRunDurationSeconds = types.Int64Value(rc.Spec.MaxRunDurationSeconds)
	} else {
		m.MaxRunDurationSeconds = types.Int64Null()
	}
	m.EnvironmentHash = types.StringValue(rc.EnvironmentHash)
	m.Slurm = types.ObjectNull(slurmTypes)
	if r := rc.Spec.Slurm; r != nil {
		opts := types.ListNull(types.StringType)
		if r.SbatchOptions != nil {
			opts = listValue(ctx, r.SbatchOptions, diags)
		}
		v, d := types.ObjectValue(slurmTypes, map[string]attr.Value{
			"cpus_per_node": optInt(r.CPUsPerNode), "memory_per_node": optString(r.MemoryPerNode), "gpus_per_node": optInt(r.GPUsPerNode),
			"sbatch_options": opts, "max_retries": optInt(r.MaxRetries),
		})
		diags.Append(d...)
		m.Slurm = v
	}
	m.Spark = types.ObjectNull(sparkTypes)
	if sc := rc.Spec.Spark; sc != nil {
		conf := types.MapNull(types.StringType)
		if sc.Configuration != nil {
			conf = mapValue(ctx, sc.Configuration, diags)
		}
		v, d := types.ObjectValue(sparkTypes, map[string]attr.Value{"configuration": conf})
		diags.Append(d...)
		m.Spark = v
	}
}

// maskRegistrySecrets keeps a registry password out of provider logs.
func maskRegistrySecrets(ctx context.Context) context.Context {
	return tflog.MaskFieldValuesWithFieldKeys(ctx, "password")
}

func (r *RunConfigurationResource) Create(ctx context.Context, req resource.CreateRequest, resp *resource.CreateResponse) {
	ctx = maskRegistrySecrets(ctx)
	var plan RunConfigurationResourceModel
	resp.Diagnostics.Append(req.Plan.Get(ctx, &plan)...)
	if resp.Diagnostics.HasError() {
		return
	}
	r.put(ctx, &plan, &resp.Diagnostics)
	if resp.Diagnostics.HasError() {
		return
	}
	resp.Diagnostics.Append(resp.State.Set(ctx, &plan)...)
}

func (r *RunConfigurationResource) put(ctx context.Context, m *RunConfigurationResourceModel, diags *diag.Diagnostics) {
	spec := m.spec(ctx, diags)
	if diags.HasError() {
		return
	}
	rc, err := r.eng.PutRunConfig(ctx, m.WorkspaceID.ValueString(), spec)
	if err != nil {
		addEngineError(diags, "Cannot store run configuration", err)
		return
	}
	m.fill(ctx, rc, diags)
}

func (r *RunConfigurationResource) Read(ctx context.Context, req resource.ReadRequest, resp *resource.ReadResponse) {
	ctx = maskRegistrySecrets(ctx)
	var state RunConfigurationResourceModel
	resp.Diagnostics.Append(req.State.Get(ctx, &state)...)
	if resp.Diagnostics.HasError() {
		return
	}
	rc, err := r.eng.ReadRunConfig(ctx, state.ID.ValueString())
	if engine.IsNotFound(err) {
		resp.State.RemoveResource(ctx)
		return
	}
	if err != nil {
		addEngineError(&resp.Diagnostics, "Cannot read run configuration", err)
		return
	}
	state.fill(ctx, rc, &resp.Diagnostics)
	resp.Diagnostics.Append(resp.State.Set(ctx, &state)...)
}

// Update changes max_run_duration_seconds and a registry password in place:
// every other input forces replacement.
func (r *RunConfigurationResource) Update(ctx context.Context, req resource.UpdateRequest, resp *resource.UpdateResponse) {
	ctx = maskRegistrySecrets(ctx)
	var plan RunConfigurationResourceModel
	resp.Diagnostics.Append(req.Plan.Get(ctx, &plan)...)
	if resp.Diagnostics.HasError() {
		return
	}
	r.put(ctx, &plan, &resp.Diagnostics)
	if resp.Diagnostics.HasError() {
		return
	}
	resp.Diagnostics.Append(resp.State.Set(ctx, &plan)...)
}

func (r *RunConfigurationResource) Delete(ctx context.Context, req resource.DeleteRequest, resp *resource.DeleteResponse) {
	var state RunConfigurationResourceModel
	resp.Diagnostics.Append(req.State.Get(ctx, &state)...)
	if resp.Diagnostics.HasError() {
		return
	}
	if err := r.eng.DeleteRunConfig(ctx, state.ID.ValueString()); err != nil && !engine.IsNotFound(err) {
		addEngineError(&resp.Diagnostics, "Cannot delete run configuration", err)
	}
}

// ImportState takes "{workspace_id}/runconfigs/{name}".
func (r *RunConfigurationResource) ImportState(ctx context.Context, req resource.ImportStateRequest, resp *resource.ImportStateResponse) {
	importChildID(ctx, req, resp, engine.ParseRunConfigID, "{workspace_id}/runconfigs/{name}", "0f8fad5b-d9cb-469f-a165-70867728950e/runconfigs/user-python")
}

func environmentFromModel(ctx context.Context, obj types.Object, diags *diag.Diagnostics) env.Environment {
	var out env.Environment
	if obj.IsNull() || obj.IsUnknown() {
		return out
	}
	var em environmentModel
	diags.Append(obj.As(ctx, &em, basetypes.ObjectAsOptions{})...)
	if !em.Python.IsNull() && !em.Python.IsUnknown() {
		var pm pythonModel
		diags.Append(em.Python.As(ctx, &pm, basetypes.ObjectAsOptions{})...)
		py := &env.Python{UserManagedDependencies: pm.UserManagedDependencies.ValueBool(), InterpreterPath: pm.InterpreterPath.ValueString()}
		if !pm.CondaDependencies.IsNull() && !pm.CondaDependencies.IsUnknown() {
			var cm condaModel
			diags.Append(pm.CondaDependencies.As(ctx, &cm, basetypes.ObjectAsOptions{})...)
			c := &env.CondaDependencies{
				PythonVersion: cm.PythonVersion.ValueString(),
				Channels:      stringList(ctx, cm.Channels, diags),
				CondaPackages: stringList(ctx, cm.CondaPackages, diags),
				PipPackages:   stringList(ctx, cm.PipPackages, diags),
			}
			if !cm.PipOptions.IsNull() && !cm.PipOptions.IsUnknown() {
				var pom pipOptionsModel
				diags.Append(cm.PipOptions.As(ctx, &pom, basetypes.ObjectAsOptions{})...)
				c.PipOptions = env.PipOptions{
					IndexURL:       pom.IndexURL.ValueString(),
					ExtraIndexURLs: stringList(ctx, pom.ExtraIndexURLs, diags),
					FindLinks:      stringList(ctx, pom.FindLinks, diags),
					NoIndex:        pom.NoIndex.ValueBool(),
				}
			}
			py.Conda = c
		}
		out.Python = py
	}
	if !em.Docker.IsNull() && !em.Docker.IsUnknown() {
		var dm dockerModel
		diags.Append(em.Docker.As(ctx, &dm, basetypes.ObjectAsOptions{})...)
		out.Docker = &env.Docker{
			Enabled:      dm.Enabled.ValueBool(),
			BaseImage:    dm.BaseImage.ValueString(),
			ShmSize:      dm.ShmSize.ValueString(),
			Network:      dm.Network.ValueString(),
			GPUs:         dm.GPUs.ValueString(),
			Arguments:    stringList(ctx, dm.Arguments, diags),
			RawArguments: stringList(ctx, dm.RawArguments, diags),
		}
		if !dm.Registry.IsNull() && !dm.Registry.IsUnknown() {
			var rm registryModel
			diags.Append(dm.Registry.As(ctx, &rm, basetypes.ObjectAsOptions{})...)
			if !rm.Address.IsNull() || !rm.Username.IsNull() || !rm.Password.IsNull() {
				out.Docker.Registry = &env.Registry{Address: rm.Address.ValueString(), Username: rm.Username.ValueString(), Password: rm.Password.ValueString()}
			}
		}
	}
	return out
}

func optString(s string) types.String {
	if s == "" {
		return types.StringNull()
	}
	return types.StringValue(s)
}

func optList(ctx context.Context, l []string, diags *diag.Diagnostics) types.List {
	if l == nil {
		return types.ListNull(types.StringType)
	}
	return listValue(ctx, l, diags)
}

func environmentToModel(ctx context.Context, e env.Environment, diags *diag.Diagnostics) types.Object {
	if e.Python == nil && e.Docker == nil {
		return types.ObjectNull(environmentTypes)
	}
	em := environmentModel{Python: types.ObjectNull(pythonTypes), Docker: types.ObjectNull(dockerTypes)}
	if py := e.Python; py != nil {
		pm := pythonModel{
			UserManagedDependencies: types.BoolValue(py.UserManagedDependencies),
			InterpreterPath:         optString(py.InterpreterPath),
			CondaDependencies:       types.ObjectNull(condaTypes),
		}
		if c := py.Conda; c != nil {
			cm := condaModel{
				PythonVersion: optString(c.PythonVersion),
				Channels:      optList(ctx, c.Channels, diags),
				CondaPackages: optList(ctx, c.CondaPackages, diags),
				PipPackages:   optList(ctx, c.PipPackages, diags),
				PipOptions:    types.ObjectNull(pipOptionsTypes),
			}
			if po := c.PipOptions; po.IndexURL != "" || po.ExtraIndexURLs != nil || po.FindLinks != nil || po.NoIndex {
				pom := pipOptionsModel{IndexURL: optString(po.IndexURL), ExtraIndexURLs: optList(ctx, po.ExtraIndexURLs, diags), FindLinks: optList(ctx, po.FindLinks, diags), NoIndex: types.BoolNull()}
				if po.NoIndex {
					pom.NoIndex = types.BoolValue(true)
				}
				v, d := types.ObjectValueFrom(ctx, pipOptionsTypes, pom)
				diags.Append(d...)
				cm.PipOptions = v
			}
			v, d := types.ObjectValueFrom(ctx, condaTypes, cm)
			diags.Append(d...)
			pm.CondaDependencies = v
		}
		v, d := types.ObjectValueFrom(ctx, pythonTypes, pm)
		diags.Append(d...)
		em.Python = v
	}
	if dk := e.Docker; dk != nil {
		dm := dockerModel{
			Enabled: types.BoolValue(dk.Enabled), BaseImage: optString(dk.BaseImage), ShmSize: optString(dk.ShmSize),
			Network: optString(dk.Network), GPUs: optString(dk.GPUs),
			Arguments: optList(ctx, dk.Arguments, diags), RawArguments: optList(ctx, dk.RawArguments, diags),
			Registry: types.ObjectNull(registryTypes),
		}
		if r := dk.Registry; r != nil {
			v, d := types.ObjectValueFrom(ctx, registryTypes, registryModel{Address: optString(r.Address), Username: optString(r.Username), Password: optString(r.Password)})
			diags.Append(d...)
			dm.Registry = v
		}
		v, d := types.ObjectValueFrom(ctx, dockerTypes, dm)
		diags.Append(d...)
		em.Docker = v
	}
	v, d := types.ObjectValueFrom(ctx, environmentTypes, em)
	diags.Append(d...)
	return v
}

func optInt(v int) types.Int64 {
	if v == 0 {
		return types.Int64Null()
	}
	return types.Int64Value(int64(v))
}

// UpgradeState moves state of version 0 to ids that name the workspace by its id.
func (r *RunConfigurationResource) UpgradeState(ctx context.Context) map[int64]resource.StateUpgrader {
	return map[int64]resource.StateUpgrader{0: {StateUpgrader: upgradeIDs(func() *engine.Engine { return r.eng })}}
}
