package provider

import (
	"context"
	"fmt"
	"strings"
	"time"

	"github.com/hashicorp/terraform-plugin-framework-timeouts/resource/timeouts"
	"github.com/hashicorp/terraform-plugin-framework-validators/int64validator"
	"github.com/hashicorp/terraform-plugin-framework-validators/stringvalidator"
	"github.com/hashicorp/terraform-plugin-framework/attr"
	"github.com/hashicorp/terraform-plugin-framework/path"
	"github.com/hashicorp/terraform-plugin-framework/resource"
	"github.com/hashicorp/terraform-plugin-framework/resource/schema"
	"github.com/hashicorp/terraform-plugin-framework/resource/schema/booldefault"
	"github.com/hashicorp/terraform-plugin-framework/resource/schema/int64default"
	"github.com/hashicorp/terraform-plugin-framework/resource/schema/planmodifier"
	"github.com/hashicorp/terraform-plugin-framework/resource/schema/stringdefault"
	"github.com/hashicorp/terraform-plugin-framework/resource/schema/stringplanmodifier"
	"github.com/hashicorp/terraform-plugin-framework/schema/validator"
	"github.com/hashicorp/terraform-plugin-framework/types"

	"github.com/openaml/terraform-provider-aml/internal/engine"
)

var (
	_ resource.ResourceWithConfigure      = &ComputeResource{}
	_ resource.ResourceWithImportState    = &ComputeResource{}
	_ resource.ResourceWithUpgradeState   = &ComputeResource{}
	_ resource.ResourceWithValidateConfig = &ComputeResource{}
)

// VMPriorities are aml_compute's vm_priority values.
var VMPriorities = []string{"Dedicated", "LowPriority"}

// NewComputeResource is the aml_compute factory.
func NewComputeResource() resource.Resource { return &ComputeResource{} }

// ComputeResource is a managed, autoscaling node pool.
type ComputeResource struct{ eng *engine.Engine }

// ComputeResourceModel is aml_compute's state.
type ComputeResourceModel struct {
	ID                         types.String   `tfsdk:"id"`
	WorkspaceID                types.String   `tfsdk:"workspace_id"`
	Name                       types.String   `tfsdk:"name"`
	VMSize                     types.String   `tfsdk:"vm_size"`
	VMPriority                 types.String   `tfsdk:"vm_priority"`
	MinNodes                   types.Int64    `tfsdk:"min_nodes"`
	MaxNodes                   types.Int64    `tfsdk:"max_nodes"`
	IdleSecondsBeforeScaledown types.Int64    `tfsdk:"idle_seconds_before_scaledown"`
	WaitForCompletion          types.Bool     `tfsdk:"wait_for_completion"`
	ForceDestroy               types.Bool     `tfsdk:"force_destroy"`
	Timeouts                   timeouts.Value `tfsdk:"timeouts"`

	ProvisioningState types.String `tfsdk:"provisioning_state"`
	AllocationState   types.String `tfsdk:"allocation_state"`
	CurrentNodeCount  types.Int64  `tfsdk:"current_node_count"`
	TargetNodeCount   types.Int64  `tfsdk:"target_node_count"`
	NodeStateCounts   types.Object `tfsdk:"node_state_counts"`
}

var nodeStateCountTypes = map[string]attr.Type{
	"idle": types.Int64Type, "running": types.Int64Type, "preparing": types.Int64Type,
	"unusable": types.Int64Type, "leaving": types.Int64Type, "preempted": types.Int64Type,
}

func nodeStateCounts(c engine.NodeCounts) types.Object {
	return types.ObjectValueMust(nodeStateCountTypes, map[string]attr.Value{
		"idle": types.Int64Value(int64(c.Idle)), "running": types.Int64Value(int64(c.Running)),
		"preparing": types.Int64Value(int64(c.Preparing)), "unusable": types.Int64Value(int64(c.Unusable)),
		"leaving": types.Int64Value(int64(c.Leaving)), "preempted": types.Int64Value(int64(c.Preempted)),
	})
}

func (r *ComputeResource) Metadata(ctx context.Context, req resource.MetadataRequest, resp *resource.MetadataResponse) {
	resp.TypeName = req.ProviderTypeName + "_compute"
}

func (r *ComputeResource) Schema(ctx context.Context, req resource.SchemaRequest, resp *resource.SchemaResponse) {
	replace := []planmodifier.String{stringplanmodifier.RequiresReplace()}
	resp.Schema = schema.Schema{
		Version: 1, // 0: ids began with the workspace's directory
		MarkdownDescription: "A managed, autoscaling node pool (Azure ML's `AmlCompute`). Nodes are node-agent processes on the machine running the engine, " +
			"one run (rank) per node, each with the CPUs (affinity, `OMP_NUM_THREADS`) and GPUs (`CUDA_VISIBLE_DEVICES`) of its `vm_size`. " +
			"The pool grows to `max_nodes` while runs are queued, keeps `min_nodes`, and stops nodes idle for `idle_seconds_before_scaledown`, " +
			"also after Terraform has exited. Scale settings update in place.",
		Attributes: map[string]schema.Attribute{
			"id": schema.StringAttribute{
				Computed: true, MarkdownDescription: "`{workspace_id}/targets/{name}`.",
				PlanModifiers: []planmodifier.String{stringplanmodifier.UseStateForUnknown()},
			},
			"workspace_id": schema.StringAttribute{Required: true, PlanModifiers: replace, MarkdownDescription: "The `id` of the workspace."},
			"name": schema.StringAttribute{
				Required: true, PlanModifiers: replace,
				MarkdownDescription: "Name used in `compute_target`: 2 to 16 letters, digits or `-`, starting with a letter; not `local` or `amlcompute`; unique across all compute targets of the workspace.",
				Validators: []validator.String{
					stringvalidator.RegexMatches(engine.TargetNamePattern, "must be 2 to 16 letters, digits or '-', starting with a letter"),
					stringvalidator.NoneOfCaseInsensitive(engine.ReservedTargetNames...),
				},
			},
			"vm_size": schema.StringAttribute{
				Required: true, PlanModifiers: replace,
				MarkdownDescription: "Node shape: one of " + oneOfDescription(engine.VMSizeNames()) + " (case-insensitive). A size larger than this host is refused at plan time.",
				Validators:          []validator.String{vmSizeValidator{}},
			},
			"vm_priority": schema.StringAttribute{
				Optional: true, Computed: true, Default: stringdefault.StaticString("Dedicated"), PlanModifiers: replace,
				MarkdownDescription: "`Dedicated` or `LowPriority` (kept for Azure compatibility; local nodes are never preempted).",
				Validators:          []validator.String{stringvalidator.OneOf(VMPriorities...)},
			},
			"min_nodes": schema.Int64Attribute{
				Optional: true, Computed: true, Default: int64default.StaticInt64(0),
				MarkdownDescription: "Nodes kept running when idle. Default 0. Updates in place.",
				Validators:          []validator.Int64{int64validator.AtLeast(0)},
			},
			"max_nodes": schema.Int64Attribute{
				Optional: true, Computed: true, Default: int64default.StaticInt64(4),
				MarkdownDescription: "Most nodes the pool grows to. Default 4. Updates in place.",
				Validators:          []validator.Int64{int64validator.AtLeast(1)},
			},
			"idle_seconds_before_scaledown": schema.Int64Attribute{
				Optional: true, Computed: true, Default: int64default.StaticInt64(1800),
				MarkdownDescription: "Seconds a node stays idle before it stops (while the pool has more than `min_nodes`). Default 1800. Updates in place.",
				Validators:          []validator.Int64{int64validator.AtLeast(0)},
			},
			"wait_for_completion": schema.BoolAttribute{
				Optional: true, Computed: true, Default: booldefault.StaticBool(true),
				MarkdownDescription: "Wait during apply until `min_nodes` nodes are ready.",
			},
			"force_destroy": schema.BoolAttribute{
				Optional: true, Computed: true, Default: booldefault.StaticBool(false),
				MarkdownDescription: "Destroy drains the pool: it fails while runs are queued or running unless this is `true` (then they are canceled). Run history stays in the workspace.",
			},
			"timeouts": timeouts.Attributes(ctx, timeouts.Opts{Create: true, Update: true, Delete: true}),

			"provisioning_state": schema.StringAttribute{Computed: true, MarkdownDescription: "`Succeeded` once the pool exists."},
			"allocation_state":   schema.StringAttribute{Computed: true, MarkdownDescription: "`Steady`, or `Resizing` while nodes start or stop."},
			"current_node_count": schema.Int64Attribute{Computed: true, MarkdownDescription: "Nodes now."},
			"target_node_count":  schema.Int64Attribute{Computed: true, MarkdownDescription: "Nodes the pool is scaling to (running + queued demand, within min and max)."},
			"node_state_counts": schema.SingleNestedAttribute{
				Computed: true, MarkdownDescription: "Nodes by state.",
				Attributes: map[string]schema.Attribute{
					"idle":      schema.Int64Attribute{Computed: true, MarkdownDescription: "Idle nodes."},
					"running":   schema.Int64Attribute{Computed: true, MarkdownDescription: "Nodes running a run."},
					"preparing": schema.Int64Attribute{Computed: true, MarkdownDescription: "Nodes starting."},
					"unusable":  schema.Int64Attribute{Computed: true, MarkdownDescription: "Unusable nodes (always 0: dead nodes are removed)."},
					"leaving":   schema.Int64Attribute{Computed: true, MarkdownDescription: "Nodes draining."},
					"preempted": schema.Int64Attribute{Computed: true, MarkdownDescription: "Preempted nodes (always 0)."},
				},
			},
		},
	}
}

func (r *ComputeResource) Configure(ctx context.Context, req resource.ConfigureRequest, resp *resource.ConfigureResponse) {
	r.eng = engineFromResource(req, resp)
}

func (m *ComputeResourceModel) spec() engine.ComputeSpec {
	return engine.ComputeSpec{
		VMSize: m.VMSize.ValueString(), VMPriority: m.VMPriority.ValueString(),
		MinNodes: int(m.MinNodes.ValueInt64()), MaxNodes: int(m.MaxNodes.ValueInt64()),
		IdleSecondsBeforeScaledown: int(m.IdleSecondsBeforeScaledown.ValueInt64()),
	}
}

func (m *ComputeResourceModel) fill(c *engine.Compute) {
	m.ID = types.StringValue(c.ID)
	m.WorkspaceID = types.StringValue(c.WorkspaceID)
	m.Name = types.StringValue(c.Name)
	if !strings.EqualFold(m.VMSize.ValueString(), c.Spec.VMSize) {
		m.VMSize = types.StringValue(c.Spec.VMSize) // keep the user's spelling
	}
	m.VMPriority = types.StringValue(c.Spec.VMPriority)
	m.MinNodes = types.Int64Value(int64(c.Spec.MinNodes))
	m.MaxNodes = types.Int64Value(int64(c.Spec.MaxNodes))
	m.IdleSecondsBeforeScaledown = types.Int64Value(int64(c.Spec.IdleSecondsBeforeScaledown))
	m.ProvisioningState = types.StringValue(c.ProvisioningState)
	m.AllocationState = types.StringValue(c.Counts.AllocationState)
	m.CurrentNodeCount = types.Int64Value(int64(c.Counts.Current))
	m.TargetNodeCount = types.Int64Value(int64(c.Counts.Target))
	m.NodeStateCounts = nodeStateCounts(c.Counts)
}

// ValidateConfig checks the scale settings and the size against this host at plan time.
func (r *ComputeResource) ValidateConfig(ctx context.Context, req resource.ValidateConfigRequest, resp *resource.ValidateConfigResponse) {
	var m ComputeResourceModel
	resp.Diagnostics.Append(req.Config.Get(ctx, &m)...)
	if resp.Diagnostics.HasError() {
		return
	}
	if !m.MinNodes.IsNull() && !m.MinNodes.IsUnknown() && !m.MaxNodes.IsUnknown() {
		maxNodes := int64(4)
		if !m.MaxNodes.IsNull() {
			maxNodes = m.MaxNodes.ValueInt64()
		}
		if m.MinNodes.ValueInt64() > maxNodes {
			resp.Diagnostics.AddAttributeError(path.Root("min_nodes"), "min_nodes is larger than max_nodes",
				fmt.Sprintf("min_nodes: %d is larger than max_nodes (%d); min_nodes must be between 0 and max_nodes", m.MinNodes.ValueInt64(), maxNodes))
		}
	}
	if !m.VMSize.IsNull() && !m.VMSize.IsUnknown() {
		if err := engine.ValidateCompute(engine.ComputeSpec{VMSize: m.VMSize.ValueString(), MaxNodes: 1}); err != nil {
			addEngineError(&resp.Diagnostics, "Invalid vm_size", err)
		}
	}
}

func (r *ComputeResource) Create(ctx context.Context, req resource.CreateRequest, resp *resource.CreateResponse) {
	var plan ComputeResourceModel
	resp.Diagnostics.Append(req.Plan.Get(ctx, &plan)...)
	if resp.Diagnostics.HasError() {
		return
	}
	ctx, cancel := withTimeout(ctx, plan.Timeouts.Create, 10*time.Minute, &resp.Diagnostics)
	defer cancel()
	c, err := r.eng.CreateCompute(ctx, plan.WorkspaceID.ValueString(), plan.Name.ValueString(), plan.spec(), plan.WaitForCompletion.ValueBool())
	if err != nil {
		addEngineError(&resp.Diagnostics, "Cannot create compute "+plan.Name.ValueString(), err)
		return
	}
	plan.fill(c)
	resp.Diagnostics.Append(resp.State.Set(ctx, &plan)...)
}

func (r *ComputeResource) Read(ctx context.Context, req resource.ReadRequest, resp *resource.ReadResponse) {
	var state ComputeResourceModel
	resp.Diagnostics.Append(req.State.Get(ctx, &state)...)
	if resp.Diagnostics.HasError() {
		return
	}
	c, err := r.eng.ReadCompute(ctx, state.ID.ValueString())
	if engine.IsNotFound(err) {
		resp.State.RemoveResource(ctx)
		return
	}
	if err != nil {
		addEngineError(&resp.Diagnostics, "Cannot read compute", err)
		return
	}
	if state.WorkspaceID.IsNull() { // import
		state.WaitForCompletion, state.ForceDestroy = types.BoolValue(true), types.BoolValue(false)
		state.Timeouts = timeouts.Value{Object: types.ObjectNull(state.Timeouts.AttributeTypes(ctx))}
	}
	state.fill(c)
	resp.Diagnostics.Append(resp.State.Set(ctx, &state)...)
}

// Update changes min_nodes, max_nodes and idle_seconds_before_scaledown in place.
func (r *ComputeResource) Update(ctx context.Context, req resource.UpdateRequest, resp *resource.UpdateResponse) {
	var plan ComputeResourceModel
	resp.Diagnostics.Append(req.Plan.Get(ctx, &plan)...)
	if resp.Diagnostics.HasError() {
		return
	}
	ctx, cancel := withTimeout(ctx, plan.Timeouts.Update, 10*time.Minute, &resp.Diagnostics)
	defer cancel()
	c, err := r.eng.UpdateCompute(ctx, plan.ID.ValueString(), plan.spec())
	if err != nil {
		addEngineError(&resp.Diagnostics, "Cannot update compute", err)
		return
	}
	plan.fill(c)
	resp.Diagnostics.Append(resp.State.Set(ctx, &plan)...)
}

func (r *ComputeResource) Delete(ctx context.Context, req resource.DeleteRequest, resp *resource.DeleteResponse) {
	var state ComputeResourceModel
	resp.Diagnostics.Append(req.State.Get(ctx, &state)...)
	if resp.Diagnostics.HasError() {
		return
	}
	ctx, cancel := withTimeout(ctx, state.Timeouts.Delete, 10*time.Minute, &resp.Diagnostics)
	defer cancel()
	if err := r.eng.DeleteCompute(ctx, state.ID.ValueString(), state.ForceDestroy.ValueBool()); err != nil {
		addEngineError(&resp.Diagnostics, "Cannot delete compute", err)
	}
}

// ImportState takes "{workspace_id}/targets/{name}".
func (r *ComputeResource) ImportState(ctx context.Context, req resource.ImportStateRequest, resp *resource.ImportStateResponse) {
	importChildID(ctx, req, resp, engine.ParseTargetID, "{workspace_id}/targets/{name}", "0f8fad5b-d9cb-469f-a165-70867728950e/targets/cpu-cluster")
}

// vmSizeValidator accepts catalog names and CUSTOM_ shapes.
type vmSizeValidator struct{}

func (vmSizeValidator) Description(ctx context.Context) string {
	return "must be one of " + strings.Join(engine.VMSizeNames(), ", ")
}

func (v vmSizeValidator) MarkdownDescription(ctx context.Context) string { return v.Description(ctx) }

func (v vmSizeValidator) ValidateString(ctx context.Context, req validator.StringRequest, resp *validator.StringResponse) {
	if req.ConfigValue.IsNull() || req.ConfigValue.IsUnknown() {
		return
	}
	if err := engine.CheckVMSize(req.ConfigValue.ValueString()); err != nil {
		resp.Diagnostics.AddAttributeError(req.Path, "Unknown vm_size", fmt.Sprintf("%s: %v", req.Path, err))
	}
}

// UpgradeState moves state of version 0 to ids that name the workspace by its id.
func (r *ComputeResource) UpgradeState(ctx context.Context) map[int64]resource.StateUpgrader {
	return map[int64]resource.StateUpgrader{0: {StateUpgrader: upgradeIDs(func() *engine.Engine { return r.eng })}}
}
