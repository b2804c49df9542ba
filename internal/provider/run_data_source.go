package provider

import (
	"context"
	"fmt"
	"math"
	"time"

	"github.com/hashicorp/terraform-plugin-framework/attr"
	"github.com/hashicorp/terraform-plugin-framework/datasource"
	"github.com/hashicorp/terraform-plugin-framework/datasource/schema"
	"github.com/hashicorp/terraform-plugin-framework/diag"
	"github.com/hashicorp/terraform-plugin-framework/path"
	"github.com/hashicorp/terraform-plugin-framework/types"

	"github.com/openaml/terraform-provider-aml/internal/engine"
	"github.com/openaml/terraform-provider-aml/internal/engine/run"
)

const (
	scriptTagsDescription = "Tags the script set itself: `mlflow.set_tag`/`set_tags` (MLflow's own `mlflow.*` tags left out), azureml's `Run.tag`/`set_tags`, `aml_run.tag`. At most 1000, values cut at 8 KiB."
	paramsDescription     = "Params the script logged with `mlflow.log_param`/`log_params`. At most 1000, values cut at 8 KiB."
)

var _ datasource.DataSourceWithConfigure = &RunDataSource{}

// NewRunDataSource is the data "aml_run" factory.
func NewRunDataSource() datasource.DataSource { return &RunDataSource{} }

// RunDataSource reads one run by id.
type RunDataSource struct{ eng *engine.Engine }

// RunDataSourceModel is data "aml_run".
type RunDataSourceModel struct {
	ID              types.String  `tfsdk:"id"`
	WorkspaceID     types.String  `tfsdk:"workspace_id"`
	RunID           types.String  `tfsdk:"run_id"`
	ExperimentName  types.String  `tfsdk:"experiment_name"`
	ComputeTarget   types.String  `tfsdk:"compute_target"`
	Status          types.String  `tfsdk:"status"`
	FailureReason   types.String  `tfsdk:"failure_reason"`
	ExitCode        types.Int64   `tfsdk:"exit_code"`
	StartTime       types.String  `tfsdk:"start_time"`
	EndTime         types.String  `tfsdk:"end_time"`
	DurationSeconds types.Float64 `tfsdk:"duration_seconds"`
	Metrics         types.Map     `tfsdk:"metrics"`
	OutputFiles     types.List    `tfsdk:"output_files"`
	OutputsPath     types.String  `tfsdk:"outputs_path"`
	OutputsURI      types.String  `tfsdk:"outputs_uri"`
	LogsURI         types.String  `tfsdk:"logs_uri"`
	LogTail         types.String  `tfsdk:"log_tail"`
	LogPath         types.String  `tfsdk:"log_path"`
	SparkAppID      types.String  `tfsdk:"spark_application_id"`
	SlurmJobID      types.String  `tfsdk:"slurm_job_id"`
	SnapshotHash    types.String  `tfsdk:"snapshot_hash"`
	Tags            types.Map     `tfsdk:"tags"`
	ScriptTags      types.Map     `tfsdk:"script_tags"`
	Params          types.Map     `tfsdk:"params"`
	MetricHistory   types.List    `tfsdk:"metric_history"`
}

// metricValueModel is one element of metric_history.
type metricValueModel struct {
	Name  types.String  `tfsdk:"name"`
	Step  types.Float64 `tfsdk:"step"`
	Value types.Float64 `tfsdk:"value"`
	Time  types.String  `tfsdk:"time"`
}

var metricValueType = types.ObjectType{AttrTypes: map[string]attr.Type{
	"name": types.StringType, "step": types.Float64Type, "value": types.Float64Type, "time": types.StringType,
}}

// metricHistoryValue converts a run's metric history for metric_history.
func metricHistoryValue(ctx context.Context, ms []run.Metric, diags *diag.Diagnostics) types.List {
	out := make([]metricValueModel, 0, len(ms))
	for _, m := range ms {
		v := metricValueModel{Name: types.StringValue(m.Name), Value: types.Float64Value(m.Value), Step: types.Float64PointerValue(m.Step), Time: types.StringNull()}
		if m.Time > 0 {
			sec, frac := math.Modf(m.Time)
			v.Time = types.StringValue(time.Unix(int64(sec), int64(frac*1e9)).UTC().Format(time.RFC3339Nano))
		}
		out = append(out, v)
	}
	l, d := types.ListValueFrom(ctx, metricValueType, out)
	diags.Append(d...)
	return l
}

func (d *RunDataSource) Metadata(ctx context.Context, req datasource.MetadataRequest, resp *datasource.MetadataResponse) {
	resp.TypeName = req.ProviderTypeName + "_run"
}

func (d *RunDataSource) Schema(ctx context.Context, req datasource.SchemaRequest, resp *datasource.SchemaResponse) {
	computed := func(desc string) schema.StringAttribute {
		return schema.StringAttribute{Computed: true, MarkdownDescription: desc}
	}
	resp.Schema = schema.Schema{
		MarkdownDescription: "Reads one run of a workspace by `run_id`: its status, exit code, metrics and output files. Reads the store only once the run has finished.",
		Attributes: map[string]schema.Attribute{
			"id":                   computed("`{workspace_id}/runs/{run_id}`."),
			"workspace_id":         schema.StringAttribute{Required: true, MarkdownDescription: "The workspace's `id`."},
			"run_id":               schema.StringAttribute{Required: true, MarkdownDescription: "The run's `run_id`."},
			"experiment_name":      computed("Experiment."),
			"compute_target":       computed("Where it ran."),
			"status":               computed("Run status."),
			"failure_reason":       computed("Why it did not complete, if it did not."),
			"exit_code":            schema.Int64Attribute{Computed: true, MarkdownDescription: "Exit code."},
			"start_time":           computed("Start time (RFC 3339)."),
			"end_time":             computed("End time (RFC 3339)."),
			"duration_seconds":     schema.Float64Attribute{Computed: true, MarkdownDescription: "Seconds between start and end."},
			"metrics":              schema.MapAttribute{ElementType: types.Float64Type, Computed: true, MarkdownDescription: "Last value of each metric."},
			"output_files":         schema.ListAttribute{ElementType: types.StringType, Computed: true, MarkdownDescription: "Files under `outputs/`."},
			"outputs_path":         computed("Directory holding the outputs on this machine (on a shared workspace, a copy downloaded from the bucket when this machine lacks it)."),
			"outputs_uri":          computed("Where any machine finds the outputs (`s3://...` on a shared workspace, `file://...` on an embedded one)."),
			"logs_uri":             computed("Where any machine finds the logs."),
			"log_tail":             computed("Last 50 lines of the log."),
			"log_path":             computed("Path of the full log."),
			"snapshot_hash":        computed("Hash of the run's source snapshot."),
			"spark_application_id": computed("The Spark application id of a PySpark run; null for other runs."),
			"slurm_job_id":         computed("The Slurm job id of a run on an aml_batch_attachment; null for other runs."),
			"tags":                 schema.MapAttribute{ElementType: types.StringType, Computed: true, MarkdownDescription: "Tags (the `tags` of its `aml_experiment_run`)."},
			"script_tags":          schema.MapAttribute{ElementType: types.StringType, Computed: true, MarkdownDescription: scriptTagsDescription},
			"params":               schema.MapAttribute{ElementType: types.StringType, Computed: true, MarkdownDescription: paramsDescription},
			"metric_history": schema.ListNestedAttribute{
				Computed: true,
				MarkdownDescription: fmt.Sprintf("Every value of every metric in the order the run logged them (the first %d): `name`, `step` (null when none was given), `value` and `time` (RFC 3339, null when unknown). "+
					"Pick one metric's curve with `[for v in data.aml_run.x.metric_history : v.value if v.name == \"loss\"]`.", engine.MaxMetricHistory),
				NestedObject: schema.NestedAttributeObject{Attributes: map[string]schema.Attribute{
					"name":  schema.StringAttribute{Computed: true, MarkdownDescription: "Metric name."},
					"step":  schema.Float64Attribute{Computed: true, MarkdownDescription: "Step the script gave, or null."},
					"value": schema.Float64Attribute{Computed: true, MarkdownDescription: "Value."},
					"time":  schema.StringAttribute{Computed: true, MarkdownDescription: "When it was logged (RFC 3339), or null."},
				}},
			},
		},
	}
}

func (d *RunDataSource) Configure(ctx context.Context, req datasource.ConfigureRequest, resp *datasource.ConfigureResponse) {
	d.eng = engineFromDataSource(req, resp)
}

func (d *RunDataSource) Read(ctx context.Context, req datasource.ReadRequest, resp *datasource.ReadResponse) {
	var m RunDataSourceModel
	resp.Diagnostics.Append(req.Config.Get(ctx, &m)...)
	if resp.Diagnostics.HasError() {
		return
	}
	run, err := d.eng.ReadRun(ctx, m.WorkspaceID.ValueString()+"/runs/"+m.RunID.ValueString())
	if err != nil {
		addEngineError(&resp.Diagnostics, "Cannot read run "+m.RunID.ValueString(), err)
		return
	}
	var rm ExperimentRunResourceModel
	rm.fillComputed(ctx, run, &resp.Diagnostics)
	m.ID, m.ExperimentName, m.ComputeTarget = rm.ID, types.StringValue(run.Experiment), types.StringValue(run.ComputeTarget)
	m.Status, m.FailureReason, m.ExitCode = rm.Status, rm.FailureReason, rm.ExitCode
	m.StartTime, m.EndTime, m.DurationSeconds = rm.StartTime, rm.EndTime, rm.DurationSeconds
	// All of them: the resource's state keeps a bounded part, this has the rest.
	m.Metrics, m.OutputFiles, m.OutputsPath = numberMap(run.Metrics), listValue(ctx, run.OutputFiles, &resp.Diagnostics), rm.OutputsPath
	m.LogTail, m.LogPath, m.SnapshotHash = rm.LogTail, rm.LogPath, rm.SnapshotHash
	m.OutputsURI, m.LogsURI = rm.OutputsURI, rm.LogsURI
	m.SparkAppID, m.SlurmJobID = rm.SparkAppID, rm.SlurmJobID
	m.Tags = mapValue(ctx, run.Tags, &resp.Diagnostics)
	m.ScriptTags, m.Params = mapValue(ctx, run.ScriptTags, &resp.Diagnostics), mapValue(ctx, run.Params, &resp.Diagnostics)
	history, truncated, err := d.eng.MetricHistory(ctx, run.ID)
	if err != nil {
		addEngineError(&resp.Diagnostics, "Cannot read the metric history of run "+run.RunID, err)
		return
	}
	if truncated {
		resp.Diagnostics.AddAttributeWarning(path.Root("metric_history"), "Metric history cut",
			fmt.Sprintf("Run %s logged more than %d metric values; metric_history has the first %d.", run.RunID, engine.MaxMetricHistory, engine.MaxMetricHistory))
	}
	m.MetricHistory = metricHistoryValue(ctx, history, &resp.Diagnostics)
	resp.Diagnostics.Append(resp.State.Set(ctx, &m)...)
}
