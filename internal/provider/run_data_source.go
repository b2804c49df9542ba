package provider

import (
	"context"

	"github.com/hashicorp/terraform-plugin-framework/datasource"
	"github.com/hashicorp/terraform-plugin-framework/datasource/schema"
	"github.com/hashicorp/terraform-plugin-framework/types"

	"github.com/openaml/terraform-provider-aml/internal/engine"
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
	LogTail         types.String  `tfsdk:"log_tail"`
	LogPath         types.String  `tfsdk:"log_path"`
	SparkAppID      types.String  `tfsdk:"spark_application_id"`
	SlurmJobID      types.String  `tfsdk:"slurm_job_id"`
	SnapshotHash    types.String  `tfsdk:"snapshot_hash"`
	Tags            types.Map     `tfsdk:"tags"`
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
			"outputs_path":         computed("Directory holding the outputs."),
			"log_tail":             computed("Last 50 lines of the log."),
			"log_path":             computed("Path of the full log."),
			"snapshot_hash":        computed("Hash of the run's source snapshot."),
			"spark_application_id": computed("The Spark application id of a PySpark run; null for other runs."),
			"slurm_job_id":         computed("The Slurm job id of a run on an aml_batch_attachment; null for other runs."),
			"tags":                 schema.MapAttribute{ElementType: types.StringType, Computed: true, MarkdownDescription: "Tags."},
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
	m.SparkAppID, m.SlurmJobID = rm.SparkAppID, rm.SlurmJobID
	m.Tags = mapValue(ctx, run.Tags, &resp.Diagnostics)
	resp.Diagnostics.Append(resp.State.Set(ctx, &m)...)
}
