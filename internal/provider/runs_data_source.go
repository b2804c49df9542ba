package provider

import (
	"context"
	"regexp"
	"strings"

	"github.com/hashicorp/terraform-plugin-framework-validators/int64validator"
	"github.com/hashicorp/terraform-plugin-framework-validators/listvalidator"
	"github.com/hashicorp/terraform-plugin-framework-validators/stringvalidator"
	"github.com/hashicorp/terraform-plugin-framework/attr"
	"github.com/hashicorp/terraform-plugin-framework/datasource"
	"github.com/hashicorp/terraform-plugin-framework/datasource/schema"
	"github.com/hashicorp/terraform-plugin-framework/diag"
	"github.com/hashicorp/terraform-plugin-framework/schema/validator"
	"github.com/hashicorp/terraform-plugin-framework/types"

	"github.com/openaml/terraform-provider-aml/internal/engine"
	"github.com/openaml/terraform-provider-aml/internal/engine/run"
)

var _ datasource.DataSourceWithConfigure = &RunsDataSource{}

// NewRunsDataSource is the data "aml_runs" factory.
func NewRunsDataSource() datasource.DataSource { return &RunsDataSource{} }

// RunsDataSource lists the runs of a workspace, filtered and ordered.
type RunsDataSource struct{ eng *engine.Engine }

// RunsDataSourceModel is data "aml_runs".
type RunsDataSourceModel struct {
	WorkspaceID    types.String `tfsdk:"workspace_id"`
	ExperimentName types.String `tfsdk:"experiment_name"`
	Statuses       types.List   `tfsdk:"statuses"`
	ComputeTarget  types.String `tfsdk:"compute_target"`
	Tags           types.Map    `tfsdk:"tags"`
	OrderBy        types.String `tfsdk:"order_by"`
	Descending     types.Bool   `tfsdk:"descending"`
	Limit          types.Int64  `tfsdk:"limit"`
	Runs           types.List   `tfsdk:"runs"`
	RunIDs         types.List   `tfsdk:"run_ids"`
}

// runSummaryModel is one element of runs.
type runSummaryModel struct {
	ID              types.String  `tfsdk:"id"`
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
	Params          types.Map     `tfsdk:"params"`
	Tags            types.Map     `tfsdk:"tags"`
	ScriptTags      types.Map     `tfsdk:"script_tags"`
	OutputsPath     types.String  `tfsdk:"outputs_path"`
	OutputsURI      types.String  `tfsdk:"outputs_uri"`
	SnapshotHash    types.String  `tfsdk:"snapshot_hash"`
}

var runSummaryType = types.ObjectType{AttrTypes: map[string]attr.Type{
	"id": types.StringType, "run_id": types.StringType, "experiment_name": types.StringType, "compute_target": types.StringType,
	"status": types.StringType, "failure_reason": types.StringType, "exit_code": types.Int64Type,
	"start_time": types.StringType, "end_time": types.StringType, "duration_seconds": types.Float64Type,
	"metrics": types.MapType{ElemType: types.Float64Type}, "params": types.MapType{ElemType: types.StringType},
	"tags": types.MapType{ElemType: types.StringType}, "script_tags": types.MapType{ElemType: types.StringType},
	"outputs_path": types.StringType, "outputs_uri": types.StringType, "snapshot_hash": types.StringType,
}}

// orderPattern is order_by's syntax (the engine checks it again).
var orderPattern = regexp.MustCompile(`^(` + strings.Join(engine.RunOrders, "|") + `|metric:.+)$`)

func (d *RunsDataSource) Metadata(ctx context.Context, req datasource.MetadataRequest, resp *datasource.MetadataResponse) {
	resp.TypeName = req.ProviderTypeName + "_runs"
}

func (d *RunsDataSource) Schema(ctx context.Context, req datasource.SchemaRequest, resp *datasource.SchemaResponse) {
	var statuses []string
	for _, s := range run.AllStatuses {
		statuses = append(statuses, string(s))
	}
	computed := func(desc string) schema.StringAttribute {
		return schema.StringAttribute{Computed: true, MarkdownDescription: desc}
	}
	resp.Schema = schema.Schema{
		MarkdownDescription: "Lists the runs of a workspace, filtered by experiment, status, compute target and tags, ordered, with their metrics, params and tags: " +
			"a sweep's best run is `runs[0]` with `order_by = \"metric:accuracy\"` and `descending = true`. It reads the workspace store only " +
			"(an active run shows its status as last recorded); run records stay after their `aml_experiment_run` is destroyed, so a list holds history too.",
		Attributes: map[string]schema.Attribute{
			"workspace_id": schema.StringAttribute{Required: true, MarkdownDescription: "The workspace's `id`."},
			"experiment_name": schema.StringAttribute{
				Optional: true, MarkdownDescription: "Only runs of this experiment.",
				Validators: []validator.String{stringvalidator.RegexMatches(engine.NamePattern, "must be up to 128 letters, digits, '.', '-' or '_', starting with a letter or digit")},
			},
			"statuses": schema.ListAttribute{
				ElementType: types.StringType, Optional: true,
				MarkdownDescription: "Only runs whose status is one of these: " + backquoted(statuses) + ".",
				Validators:          []validator.List{listvalidator.ValueStringsAre(stringvalidator.OneOf(statuses...))},
			},
			"compute_target": schema.StringAttribute{Optional: true, MarkdownDescription: "Only runs on this compute target (`local`, or a target's `name`)."},
			"tags": schema.MapAttribute{
				ElementType: types.StringType, Optional: true,
				MarkdownDescription: "Only runs that have every one of these tags with this value: in their `tags`, or else in the tags their script set (`script_tags`).",
			},
			"order_by": schema.StringAttribute{
				Optional: true,
				MarkdownDescription: "Order of `runs`: `created` (default, oldest first), `start_time`, `end_time`, or `metric:<name>` (the metric's last value). " +
					"Runs without the key (no end time yet, or not that metric) come last either way; ties keep creation order.",
				Validators: []validator.String{stringvalidator.RegexMatches(orderPattern, "must be created, start_time, end_time or metric:<name>")},
			},
			"descending": schema.BoolAttribute{Optional: true, MarkdownDescription: "Reverse the order (largest metric first). Default `false`."},
			"limit": schema.Int64Attribute{
				Optional: true, MarkdownDescription: "Keep the first `limit` runs after ordering. Default: all.",
				Validators: []validator.Int64{int64validator.AtLeast(1)},
			},
			"run_ids": schema.ListAttribute{ElementType: types.StringType, Computed: true, MarkdownDescription: "The `run_id` of each run in `runs`, in the same order."},
			"runs": schema.ListNestedAttribute{
				Computed: true, MarkdownDescription: "The matching runs, in order.",
				NestedObject: schema.NestedAttributeObject{Attributes: map[string]schema.Attribute{
					"id":               computed("`{workspace_id}/runs/{run_id}`."),
					"run_id":           computed("Run id."),
					"experiment_name":  computed("Experiment."),
					"compute_target":   computed("Where it ran."),
					"status":           computed("Run status (as last recorded)."),
					"failure_reason":   computed("Why it did not complete, if it did not."),
					"exit_code":        schema.Int64Attribute{Computed: true, MarkdownDescription: "Exit code, or null."},
					"start_time":       computed("Start time (RFC 3339), or null."),
					"end_time":         computed("End time (RFC 3339), or null."),
					"duration_seconds": schema.Float64Attribute{Computed: true, MarkdownDescription: "Seconds between start and end."},
					"metrics":          schema.MapAttribute{ElementType: types.Float64Type, Computed: true, MarkdownDescription: "Last value of each metric (all of them)."},
					"params":           schema.MapAttribute{ElementType: types.StringType, Computed: true, MarkdownDescription: paramsDescription},
					"tags":             schema.MapAttribute{ElementType: types.StringType, Computed: true, MarkdownDescription: "Tags of the run (its `aml_experiment_run`'s `tags`)."},
					"script_tags":      schema.MapAttribute{ElementType: types.StringType, Computed: true, MarkdownDescription: scriptTagsDescription},
					"outputs_path":     computed("Directory holding the run's outputs."),
					"outputs_uri":      computed("Where any machine finds the run's outputs (`s3://...` on a shared workspace, `file://...` on an embedded one)."),
					"snapshot_hash":    computed("Hash of the run's source snapshot."),
				}},
			},
		},
	}
}

func backquoted(vs []string) string {
	out := make([]string, len(vs))
	for i, v := range vs {
		out[i] = "`" + v + "`"
	}
	return strings.Join(out, ", ")
}

func (d *RunsDataSource) Configure(ctx context.Context, req datasource.ConfigureRequest, resp *datasource.ConfigureResponse) {
	d.eng = engineFromDataSource(req, resp)
}

func (d *RunsDataSource) Read(ctx context.Context, req datasource.ReadRequest, resp *datasource.ReadResponse) {
	var m RunsDataSourceModel
	resp.Diagnostics.Append(req.Config.Get(ctx, &m)...)
	if resp.Diagnostics.HasError() {
		return
	}
	q := engine.RunQuery{
		Experiment: m.ExperimentName.ValueString(),
		Statuses:   stringList(ctx, m.Statuses, &resp.Diagnostics),
		Target:     m.ComputeTarget.ValueString(),
		Tags:       stringMap(ctx, m.Tags, &resp.Diagnostics),
		OrderBy:    m.OrderBy.ValueString(),
		Descending: m.Descending.ValueBool(),
		Limit:      int(m.Limit.ValueInt64()),
	}
	if resp.Diagnostics.HasError() {
		return
	}
	runs, err := d.eng.ListRuns(ctx, m.WorkspaceID.ValueString(), q)
	if err != nil {
		addEngineError(&resp.Diagnostics, "Cannot list runs", err)
		return
	}
	summaries := make([]runSummaryModel, 0, len(runs))
	ids := make([]string, 0, len(runs))
	for _, r := range runs {
		summaries = append(summaries, runSummary(ctx, r, &resp.Diagnostics))
		ids = append(ids, r.RunID)
	}
	var diags diag.Diagnostics
	m.Runs, diags = types.ListValueFrom(ctx, runSummaryType, summaries)
	resp.Diagnostics.Append(diags...)
	m.RunIDs = listValue(ctx, ids, &resp.Diagnostics)
	resp.Diagnostics.Append(resp.State.Set(ctx, &m)...)
}

func runSummary(ctx context.Context, r *engine.Run, diags *diag.Diagnostics) runSummaryModel {
	s := runSummaryModel{
		ID: types.StringValue(r.ID), RunID: types.StringValue(r.RunID),
		ExperimentName: types.StringValue(r.Experiment), ComputeTarget: types.StringValue(r.ComputeTarget),
		Status: types.StringValue(string(r.Status)), FailureReason: types.StringValue(r.FailureReason),
		ExitCode:  types.Int64Null(),
		StartTime: timePtr(r.StartTime), EndTime: timePtr(r.EndTime),
		DurationSeconds: types.Float64Value(r.DurationSeconds),
		Metrics:         numberMap(r.Metrics),
		Params:          mapValue(ctx, r.Params, diags),
		Tags:            mapValue(ctx, orEmptyMap(r.Tags), diags),
		ScriptTags:      mapValue(ctx, r.ScriptTags, diags),
		OutputsPath:     types.StringValue(r.OutputsPath),
		OutputsURI:      types.StringValue(r.OutputsURI),
		SnapshotHash:    types.StringValue(r.SnapshotHash),
	}
	if r.ExitCode != nil {
		s.ExitCode = types.Int64Value(int64(*r.ExitCode))
	}
	return s
}

func orEmptyMap(m map[string]string) map[string]string {
	if m == nil {
		return map[string]string{}
	}
	return m
}
