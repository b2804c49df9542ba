package provider

import (
	"context"
	"time"

	"github.com/hashicorp/terraform-plugin-framework-timeouts/resource/timeouts"
	"github.com/hashicorp/terraform-plugin-framework-validators/stringvalidator"
	"github.com/hashicorp/terraform-plugin-framework/attr"
	"github.com/hashicorp/terraform-plugin-framework/diag"
	"github.com/hashicorp/terraform-plugin-framework/resource"
	"github.com/hashicorp/terraform-plugin-framework/resource/schema"
	"github.com/hashicorp/terraform-plugin-framework/resource/schema/booldefault"
	"github.com/hashicorp/terraform-plugin-framework/resource/schema/listplanmodifier"
	"github.com/hashicorp/terraform-plugin-framework/resource/schema/planmodifier"
	"github.com/hashicorp/terraform-plugin-framework/resource/schema/stringplanmodifier"
	"github.com/hashicorp/terraform-plugin-framework/schema/validator"
	"github.com/hashicorp/terraform-plugin-framework/types"
	"github.com/hashicorp/terraform-plugin-framework/types/basetypes"
	"github.com/hashicorp/terraform-plugin-log/tflog"

	"github.com/openaml/terraform-provider-aml/internal/engine"
)

var (
	_ resource.ResourceWithConfigure    = &BatchAttachmentResource{}
	_ resource.ResourceWithImportState  = &BatchAttachmentResource{}
	_ resource.ResourceWithUpgradeState = &BatchAttachmentResource{}
	_ resource.ResourceWithModifyPlan   = &BatchAttachmentResource{}
)

// NewBatchAttachmentResource is the aml_batch_attachment factory.
func NewBatchAttachmentResource() resource.Resource { return &BatchAttachmentResource{} }

// BatchAttachmentResource attaches a Slurm cluster.
type BatchAttachmentResource struct{ eng *engine.Engine }

// BatchAttachmentResourceModel is aml_batch_attachment's state.
type BatchAttachmentResourceModel struct {
	ID                types.String   `tfsdk:"id"`
	WorkspaceID       types.String   `tfsdk:"workspace_id"`
	Name              types.String   `tfsdk:"name"`
	Partition         types.String   `tfsdk:"partition"`
	Account           types.String   `tfsdk:"account"`
	QOS               types.String   `tfsdk:"qos"`
	Login             types.Object   `tfsdk:"login"`
	SharedRoot        types.String   `tfsdk:"shared_root"`
	ForceDetach       types.Bool     `tfsdk:"force_detach"`
	Timeouts          timeouts.Value `tfsdk:"timeouts"`
	SlurmVersion      types.String   `tfsdk:"slurm_version"`
	ClusterName       types.String   `tfsdk:"cluster_name"`
	Partitions        types.List     `tfsdk:"partitions"`
	DefaultPartition  types.String   `tfsdk:"default_partition"`
	ProvisioningState types.String   `tfsdk:"provisioning_state"`
}

// The login block has the attributes of aml_remote_compute's bastion block.
type loginModel = bastionModel

var loginTypes = bastionTypes

var partitionTypes = map[string]attr.Type{
	"name": types.StringType, "nodes": types.Int64Type, "state": types.StringType, "max_time": types.StringType, "default": types.BoolType,
}

func (r *BatchAttachmentResource) Metadata(ctx context.Context, req resource.MetadataRequest, resp *resource.MetadataResponse) {
	resp.TypeName = req.ProviderTypeName + "_batch_attachment"
}

func (r *BatchAttachmentResource) Schema(ctx context.Context, req resource.SchemaRequest, resp *resource.SchemaResponse) {
	replace := []planmodifier.String{stringplanmodifier.RequiresReplace()}
	keep := []planmodifier.String{stringplanmodifier.UseStateForUnknown()}
	optional := func(desc string) schema.StringAttribute {
		return schema.StringAttribute{Optional: true, PlanModifiers: replace, MarkdownDescription: desc, Validators: []validator.String{stringvalidator.LengthAtLeast(1)}}
	}
	resp.Schema = schema.Schema{
		Version: 1, // 0: ids began with the workspace's directory
		MarkdownDescription: "Attaches a Slurm cluster (Azure ML's `BatchCompute`, for machines you own): runs are staged once into `shared_root` (a directory every node sees), " +
			"submitted with `sbatch` (from the machine running Terraform, or from a `login` node over SSH), and run with `srun`, one task per node, every rank in the same run directory. " +
			"Status, exit codes and results come from that directory, so Slurm accounting is not needed.",
		Attributes: map[string]schema.Attribute{
			"id":           schema.StringAttribute{Computed: true, PlanModifiers: keep, MarkdownDescription: "`{workspace_id}/targets/{name}`."},
			"workspace_id": schema.StringAttribute{Required: true, PlanModifiers: replace, MarkdownDescription: "The `id` of the workspace."},
			"name": schema.StringAttribute{
				Required: true, PlanModifiers: replace,
				MarkdownDescription: "Compute target name used in `compute_target`: 2 to 16 letters, digits or `-`, starting with a letter.",
				Validators: []validator.String{
					stringvalidator.RegexMatches(engine.TargetNamePattern, "must be 2 to 16 letters, digits or '-', starting with a letter"),
					stringvalidator.NoneOfCaseInsensitive(engine.ReservedTargetNames...),
				},
			},
			"partition":   optional("Partition runs are submitted to. Default: the cluster's default partition. An unknown one is refused, listing those that exist."),
			"account":     optional("Slurm account (`--account`)."),
			"qos":         optional("Quality of service (`--qos`)."),
			"shared_root": schema.StringAttribute{Required: true, PlanModifiers: replace, MarkdownDescription: "Absolute directory every node of the cluster sees (e.g. on NFS): run directories, built environments, the agent. It must be writable."},
			"force_detach": schema.BoolAttribute{
				Optional: true, Computed: true, Default: booldefault.StaticBool(false),
				MarkdownDescription: "Destroying the attachment fails while runs are active on it; with `true` they are canceled first (`scancel`).",
			},
			"timeouts": timeouts.Attributes(ctx, timeouts.Opts{Create: true, Delete: true,
				CreateDescription: "How long attaching may take (default 10m).", DeleteDescription: "How long detaching may take (default 10m)."}),
			"slurm_version":      schema.StringAttribute{Computed: true, PlanModifiers: keep, MarkdownDescription: "Slurm version of the client where jobs are submitted."},
			"cluster_name":       schema.StringAttribute{Computed: true, PlanModifiers: keep, MarkdownDescription: "The cluster's `ClusterName`."},
			"default_partition":  schema.StringAttribute{Computed: true, PlanModifiers: keep, MarkdownDescription: "The cluster's default partition."},
			"provisioning_state": schema.StringAttribute{Computed: true, PlanModifiers: keep, MarkdownDescription: "`Succeeded` once attached."},
			"partitions": schema.ListAttribute{
				Computed: true, PlanModifiers: []planmodifier.List{listplanmodifier.UseStateForUnknown()},
				ElementType:         types.ObjectType{AttrTypes: partitionTypes},
				MarkdownDescription: "The cluster's partitions at attach time: `name`, `nodes`, `state`, `max_time`, `default`.",
			},
		},
		Blocks: map[string]schema.Block{
			"login": sshHostBlock("The login node to submit from, over SSH (host key rules as `aml_remote_compute`: pinned, or the first key seen pinned). Omit to submit from the machine running Terraform.", "Login node", "User to submit as; jobs run as this user"),
		},
	}
}

func (r *BatchAttachmentResource) Configure(ctx context.Context, req resource.ConfigureRequest, resp *resource.ConfigureResponse) {
	r.eng = engineFromResource(req, resp)
}

func (r *BatchAttachmentResource) ModifyPlan(ctx context.Context, req resource.ModifyPlanRequest, resp *resource.ModifyPlanResponse) {
	notePlannedTarget(ctx, r.eng, req)
}

func (m *BatchAttachmentResourceModel) spec(ctx context.Context, diags diagAppender) (engine.BatchSpec, engine.Credentials) {
	spec := engine.BatchSpec{Partition: m.Partition.ValueString(), Account: m.Account.ValueString(), QOS: m.QOS.ValueString(), SharedRoot: m.SharedRoot.ValueString()}
	var creds engine.Credentials
	if !m.Login.IsNull() && !m.Login.IsUnknown() {
		var l loginModel
		diags.Append(m.Login.As(ctx, &l, basetypes.ObjectAsOptions{})...)
		port := int(l.SSHPort.ValueInt64())
		if port == 0 {
			port = 22
		}
		spec.Login = &engine.RemoteSpec{Address: l.Address.ValueString(), Port: port, Username: l.Username.ValueString(), HostKey: l.HostKey.ValueString()}
		creds = engine.Credentials{Password: l.Password.ValueString(), PrivateKey: l.PrivateKey.ValueString(), Passphrase: l.PrivateKeyPassphrase.ValueString()}
	}
	return spec, creds
}

func (m *BatchAttachmentResourceModel) fill(ctx context.Context, t *engine.Target, diags *diag.Diagnostics) {
	var spec engine.BatchSpec
	var st engine.BatchState
	if err := t.Decode(&spec, &st); err != nil {
		diags.AddError("Cannot read compute target", err.Error())
		return
	}
	m.ID, m.WorkspaceID, m.Name = types.StringValue(t.ID), types.StringValue(t.WorkspaceID), types.StringValue(t.Name)
	m.Partition, m.Account, m.QOS = optString(spec.Partition), optString(spec.Account), optString(spec.QOS)
	m.SharedRoot = types.StringValue(spec.SharedRoot)
	m.SlurmVersion, m.ClusterName = types.StringValue(st.SlurmVersion), types.StringValue(st.ClusterName)
	m.DefaultPartition, m.ProvisioningState = types.StringValue(st.DefaultPartition), types.StringValue(t.ProvisioningState)
	parts := make([]attr.Value, len(st.Partitions))
	for i, p := range st.Partitions {
		parts[i] = types.ObjectValueMust(partitionTypes, map[string]attr.Value{
			"name": types.StringValue(p.Name), "nodes": types.Int64Value(int64(p.Nodes)), "state": types.StringValue(p.State),
			"max_time": types.StringValue(p.MaxTime), "default": types.BoolValue(p.Default),
		})
	}
	m.Partitions = types.ListValueMust(types.ObjectType{AttrTypes: partitionTypes}, parts)
}

func (r *BatchAttachmentResource) Create(ctx context.Context, req resource.CreateRequest, resp *resource.CreateResponse) {
	var plan BatchAttachmentResourceModel
	resp.Diagnostics.Append(req.Plan.Get(ctx, &plan)...)
	if resp.Diagnostics.HasError() {
		return
	}
	spec, creds := plan.spec(ctx, &resp.Diagnostics)
	if resp.Diagnostics.HasError() {
		return
	}
	ctx, cancel := withTimeout(ctx, plan.Timeouts.Create, 10*time.Minute, &resp.Diagnostics)
	defer cancel()
	ctx = tflog.MaskFieldValuesWithFieldKeys(ctx, "password", "private_key", "private_key_passphrase")
	var secrets any
	if spec.Login != nil {
		secrets = creds
	}
	t, err := r.eng.AttachTarget(ctx, plan.WorkspaceID.ValueString(), engine.KindBatch, plan.Name.ValueString(), spec, secrets)
	if err != nil {
		addEngineError(&resp.Diagnostics, "Cannot attach Slurm cluster "+plan.Name.ValueString(), err)
		return
	}
	plan.fill(ctx, t, &resp.Diagnostics)
	resp.Diagnostics.Append(resp.State.Set(ctx, &plan)...)
}

func (r *BatchAttachmentResource) Read(ctx context.Context, req resource.ReadRequest, resp *resource.ReadResponse) {
	var state BatchAttachmentResourceModel
	resp.Diagnostics.Append(req.State.Get(ctx, &state)...)
	if resp.Diagnostics.HasError() {
		return
	}
	t, err := r.eng.ReadTarget(ctx, state.ID.ValueString())
	if engine.IsNotFound(err) {
		resp.State.RemoveResource(ctx)
		return
	}
	if err != nil {
		addEngineError(&resp.Diagnostics, "Cannot read compute target", err)
		return
	}
	if state.WorkspaceID.IsNull() { // import: the login block comes from the workspace
		state.ForceDetach = types.BoolValue(false)
		state.Timeouts = timeouts.Value{Object: types.ObjectNull(state.Timeouts.AttributeTypes(ctx))}
		state.Login = types.ObjectNull(loginTypes)
		var spec engine.BatchSpec
		if err := t.Decode(&spec, nil); err == nil && spec.Login != nil {
			var creds engine.Credentials
			if err := r.eng.TargetSecrets(ctx, state.ID.ValueString(), &creds); err != nil {
				addEngineError(&resp.Diagnostics, "Cannot read compute target credentials", err)
				return
			}
			state.Login = sshHostValue(ctx, spec.Login, &creds, &resp.Diagnostics)
		}
	}
	state.fill(ctx, t, &resp.Diagnostics)
	resp.Diagnostics.Append(resp.State.Set(ctx, &state)...)
}

// Update only ever changes force_detach and timeouts (state only): every other input replaces.
func (r *BatchAttachmentResource) Update(ctx context.Context, req resource.UpdateRequest, resp *resource.UpdateResponse) {
	var plan, state BatchAttachmentResourceModel
	resp.Diagnostics.Append(req.Plan.Get(ctx, &plan)...)
	resp.Diagnostics.Append(req.State.Get(ctx, &state)...)
	if resp.Diagnostics.HasError() {
		return
	}
	state.ForceDetach, state.Timeouts = plan.ForceDetach, plan.Timeouts
	resp.Diagnostics.Append(resp.State.Set(ctx, &state)...)
}

func (r *BatchAttachmentResource) Delete(ctx context.Context, req resource.DeleteRequest, resp *resource.DeleteResponse) {
	var state BatchAttachmentResourceModel
	resp.Diagnostics.Append(req.State.Get(ctx, &state)...)
	if resp.Diagnostics.HasError() {
		return
	}
	ctx, cancel := withTimeout(ctx, state.Timeouts.Delete, 10*time.Minute, &resp.Diagnostics)
	defer cancel()
	if err := r.eng.DetachTarget(ctx, state.ID.ValueString(), state.ForceDetach.ValueBool()); err != nil {
		addEngineError(&resp.Diagnostics, "Cannot detach compute target", err)
	}
}

// ImportState takes "{workspace_id}/targets/{name}".
func (r *BatchAttachmentResource) ImportState(ctx context.Context, req resource.ImportStateRequest, resp *resource.ImportStateResponse) {
	importChildID(ctx, req, resp, engine.ParseTargetID, "{workspace_id}/targets/{name}", "0f8fad5b-d9cb-469f-a165-70867728950e/targets/mybatchcompute")
}

// UpgradeState moves state of version 0 to ids that name the workspace by its id.
func (r *BatchAttachmentResource) UpgradeState(ctx context.Context) map[int64]resource.StateUpgrader {
	return map[int64]resource.StateUpgrader{0: {StateUpgrader: upgradeIDs(func() *engine.Engine { return r.eng })}}
}
