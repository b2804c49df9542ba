package provider

import (
	"context"

	"github.com/hashicorp/terraform-plugin-framework/datasource"
	"github.com/hashicorp/terraform-plugin-framework/datasource/schema"
	"github.com/hashicorp/terraform-plugin-framework/types"

	"github.com/openaml/terraform-provider-aml/internal/engine"
)

var _ datasource.DataSourceWithConfigure = &ComputeTargetDataSource{}

// NewComputeTargetDataSource is the data "aml_compute_target" factory.
func NewComputeTargetDataSource() datasource.DataSource { return &ComputeTargetDataSource{} }

// ComputeTargetDataSource reads any compute target with live status.
type ComputeTargetDataSource struct{ eng *engine.Engine }

// ComputeTargetDataSourceModel is data "aml_compute_target".
type ComputeTargetDataSourceModel struct {
	ID                types.String `tfsdk:"id"`
	WorkspaceID       types.String `tfsdk:"workspace_id"`
	Name              types.String `tfsdk:"name"`
	Kind              types.String `tfsdk:"kind"`
	ProvisioningState types.String `tfsdk:"provisioning_state"`
	Address           types.String `tfsdk:"address"`
	OS                types.String `tfsdk:"os"`
	Arch              types.String `tfsdk:"arch"`
	CPUCount          types.Int64  `tfsdk:"cpu_count"`
	MemoryMB          types.Int64  `tfsdk:"memory_mb"`
	GPUCount          types.Int64  `tfsdk:"gpu_count"`
	AllocationState   types.String `tfsdk:"allocation_state"`
	CurrentNodeCount  types.Int64  `tfsdk:"current_node_count"`
	TargetNodeCount   types.Int64  `tfsdk:"target_node_count"`
	QueuedRuns        types.Int64  `tfsdk:"queued_runs"`
	NodeStateCounts   types.Object `tfsdk:"node_state_counts"`
}

func (d *ComputeTargetDataSource) Metadata(ctx context.Context, req datasource.MetadataRequest, resp *datasource.MetadataResponse) {
	resp.TypeName = req.ProviderTypeName + "_compute_target"
}

func (d *ComputeTargetDataSource) Schema(ctx context.Context, req datasource.SchemaRequest, resp *datasource.SchemaResponse) {
	str := func(desc string) schema.StringAttribute {
		return schema.StringAttribute{Computed: true, MarkdownDescription: desc}
	}
	num := func(desc string) schema.Int64Attribute {
		return schema.Int64Attribute{Computed: true, MarkdownDescription: desc}
	}
	resp.Schema = schema.Schema{
		MarkdownDescription: "Reads any compute target of a workspace by name (`local`, an attached SSH host, a managed pool) with live status: node counts of a pool are observed when read.",
		Attributes: map[string]schema.Attribute{
			"id":                 str("`{workspace_id}/targets/{name}`."),
			"workspace_id":       schema.StringAttribute{Required: true, MarkdownDescription: "The workspace's `id`."},
			"name":               schema.StringAttribute{Required: true, MarkdownDescription: "Target name; `local` is the machine running Terraform."},
			"kind":               str("`local`, `ssh` (`aml_remote_compute`) or `amlcompute` (`aml_compute`)."),
			"provisioning_state": str("`Succeeded` for an existing target."),
			"address":            str("SSH address (SSH hosts only)."),
			"os":                 str("Operating system."),
			"arch":               str("CPU architecture."),
			"cpu_count":          num("CPUs (per node for pools)."),
			"memory_mb":          num("Memory in MiB (per node for pools)."),
			"gpu_count":          num("GPUs (per node for pools)."),
			"allocation_state":   str("Pools: `Steady` or `Resizing`."),
			"current_node_count": num("Pools: nodes now."),
			"target_node_count":  num("Pools: nodes it is scaling to."),
			"queued_runs":        num("Pools: runs waiting for nodes."),
			"node_state_counts": schema.SingleNestedAttribute{
				Computed: true, MarkdownDescription: "Pools: nodes by state.",
				Attributes: map[string]schema.Attribute{
					"idle": num("Idle."), "running": num("Running."), "preparing": num("Starting."),
					"unusable": num("Unusable."), "leaving": num("Draining."), "preempted": num("Preempted."),
				},
			},
		},
	}
}

func (d *ComputeTargetDataSource) Configure(ctx context.Context, req datasource.ConfigureRequest, resp *datasource.ConfigureResponse) {
	d.eng = engineFromDataSource(req, resp)
}

func (d *ComputeTargetDataSource) Read(ctx context.Context, req datasource.ReadRequest, resp *datasource.ReadResponse) {
	var m ComputeTargetDataSourceModel
	resp.Diagnostics.Append(req.Config.Get(ctx, &m)...)
	if resp.Diagnostics.HasError() {
		return
	}
	ts, err := d.eng.ReadTargetStatus(ctx, m.WorkspaceID.ValueString(), m.Name.ValueString())
	if err != nil {
		addEngineError(&resp.Diagnostics, "Cannot read compute target "+m.Name.ValueString(), err)
		return
	}
	m.ID, m.Kind, m.ProvisioningState = types.StringValue(ts.ID), types.StringValue(ts.Kind), types.StringValue(ts.ProvisioningState)
	m.Address = optString(ts.Address)
	m.OS, m.Arch = types.StringValue(ts.Facts.OS), types.StringValue(ts.Facts.Arch)
	m.CPUCount, m.MemoryMB, m.GPUCount = types.Int64Value(int64(ts.Facts.Cores)), types.Int64Value(ts.Facts.MemoryBytes>>20), types.Int64Value(int64(ts.Facts.GPUs))
	m.AllocationState, m.CurrentNodeCount, m.TargetNodeCount, m.QueuedRuns = types.StringNull(), types.Int64Null(), types.Int64Null(), types.Int64Null()
	m.NodeStateCounts = types.ObjectNull(nodeStateCountTypes)
	if c := ts.Nodes; c != nil {
		m.AllocationState = types.StringValue(c.AllocationState)
		m.CurrentNodeCount, m.TargetNodeCount = types.Int64Value(int64(c.Current)), types.Int64Value(int64(c.Target))
		m.QueuedRuns = types.Int64Value(int64(c.Queued))
		m.NodeStateCounts = nodeStateCounts(*c)
	}
	resp.Diagnostics.Append(resp.State.Set(ctx, &m)...)
}
