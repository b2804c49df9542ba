package provider

import (
	"context"
	"fmt"

	"github.com/hashicorp/terraform-plugin-framework-validators/stringvalidator"
	"github.com/hashicorp/terraform-plugin-framework/path"
	"github.com/hashicorp/terraform-plugin-framework/resource"
	"github.com/hashicorp/terraform-plugin-framework/resource/schema"
	"github.com/hashicorp/terraform-plugin-framework/resource/schema/booldefault"
	"github.com/hashicorp/terraform-plugin-framework/resource/schema/planmodifier"
	"github.com/hashicorp/terraform-plugin-framework/resource/schema/stringdefault"
	"github.com/hashicorp/terraform-plugin-framework/resource/schema/stringplanmodifier"
	"github.com/hashicorp/terraform-plugin-framework/schema/validator"
	"github.com/hashicorp/terraform-plugin-framework/types"
	"github.com/hashicorp/terraform-plugin-log/tflog"

	"github.com/openaml/terraform-provider-aml/internal/engine"
)

var (
	_ resource.ResourceWithConfigure    = &WorkspaceResource{}
	_ resource.ResourceWithImportState  = &WorkspaceResource{}
	_ resource.ResourceWithModifyPlan   = &WorkspaceResource{}
	_ resource.ResourceWithUpgradeState = &WorkspaceResource{}
)

// NewWorkspaceResource is the aml_workspace factory.
func NewWorkspaceResource() resource.Resource { return &WorkspaceResource{} }

// WorkspaceResource manages a workspace store.
type WorkspaceResource struct{ eng *engine.Engine }

// WorkspaceResourceModel is aml_workspace's state.
type WorkspaceResourceModel struct {
	ID             types.String `tfsdk:"id"`
	Name           types.String `tfsdk:"name"`
	StoragePath    types.String `tfsdk:"storage_path"`
	Description    types.String `tfsdk:"description"`
	Tags           types.Map    `tfsdk:"tags"`
	ForceDestroy   types.Bool   `tfsdk:"force_destroy"`
	DeletionPolicy types.String `tfsdk:"deletion_policy"`
	CreatedTime    types.String `tfsdk:"created_time"`
	Backend        types.String `tfsdk:"backend"`
}

func (r *WorkspaceResource) Metadata(ctx context.Context, req resource.MetadataRequest, resp *resource.MetadataResponse) {
	resp.TypeName = req.ProviderTypeName + "_workspace"
}

func (r *WorkspaceResource) Schema(ctx context.Context, req resource.SchemaRequest, resp *resource.SchemaResponse) {
	resp.Schema = schema.Schema{
		Version: 1,
		MarkdownDescription: "A workspace: the store that holds run configurations, compute targets, source snapshots and the history of every run " +
			"(Azure ML's `Workspace`). It is a directory with a SQLite database and a content-addressed blob store.",
		Attributes: map[string]schema.Attribute{
			"backend": schema.StringAttribute{
				Optional: true,
				Computed: true,
				Default:  stringdefault.StaticString(engine.BackendEmbedded),
				MarkdownDescription: "Where the workspace lives: `" + engine.BackendEmbedded + "` (default), a directory on this machine (`storage_path`), or `" + engine.BackendShared +
					"`, the provider's `shared_backend` (PostgreSQL and an S3-compatible bucket that every machine reaches, for teams and CI; the workspace is found by `name`). Changing it replaces the workspace.",
				Validators:    []validator.String{stringvalidator.OneOf(engine.Backends...)},
				PlanModifiers: []planmodifier.String{stringplanmodifier.RequiresReplace()},
			},
			"id": schema.StringAttribute{
				Computed:            true,
				MarkdownDescription: "The workspace's stable id, a UUID given when it is created and kept in its store. It names no machine path: a moved or re-cloned checkout, or another machine reaching the same workspace, sees the same id.",
				PlanModifiers:       []planmodifier.String{stringplanmodifier.UseStateForUnknown()},
			},
			"name": schema.StringAttribute{
				Required:            true,
				MarkdownDescription: "Workspace name: 3 to 33 letters, digits, `-` or `_`, starting with a letter or digit.",
				Validators: []validator.String{
					stringvalidator.RegexMatches(engine.WorkspaceNamePattern, "must be 3 to 33 letters, digits, '-' or '_', starting with a letter or digit"),
				},
				PlanModifiers: []planmodifier.String{stringplanmodifier.RequiresReplace()},
			},
			"storage_path": schema.StringAttribute{
				Optional:            true,
				Computed:            true,
				MarkdownDescription: "Directory of the workspace, kept as written. A relative path (`\"wsdir\"`, `\"../shared/ws\"`) is resolved against Terraform's working directory each time, so it means the same in every checkout. Default: `" + engine.DefaultWorkspaceRoot + "/<name>` (relative). A change that names another directory replaces the workspace; another spelling of the same directory (`\"wsdir/\"`, `\"./wsdir\"`) does not.",
				Validators:          []validator.String{stringvalidator.LengthAtLeast(1)},
				PlanModifiers:       []planmodifier.String{storageReplace{r}, stringplanmodifier.UseStateForUnknown()},
			},
			"description": schema.StringAttribute{
				Optional:            true,
				Computed:            true,
				Default:             stringdefault.StaticString(""),
				MarkdownDescription: "Free-form description.",
			},
			"tags": schema.MapAttribute{
				ElementType:         types.StringType,
				Optional:            true,
				MarkdownDescription: "Tags stored with the workspace.",
			},
			"force_destroy": schema.BoolAttribute{
				Optional:            true,
				Computed:            true,
				Default:             booldefault.StaticBool(false),
				DeprecationMessage:  "Use deletion_policy = \"DELETE\" instead.",
				MarkdownDescription: "Deprecated: `true` is `deletion_policy = \"DELETE\"`.",
			},
			"deletion_policy": schema.StringAttribute{
				Optional:   true,
				Computed:   true,
				Default:    stringdefault.StaticString(engine.DeleteKeepHistory),
				Validators: []validator.String{stringvalidator.OneOf(engine.DeletionPolicies...)},
				MarkdownDescription: "What `terraform destroy` does with the workspace: " +
					"`KEEP_HISTORY` (default) deletes it when it holds no run records and otherwise keeps its directory, with every run's record, logs and outputs, on disk while Terraform forgets it (an apply with the same `name` and `storage_path` adopts it again), so destroy and `terraform test` succeed and no history is lost; " +
					"`DELETE` deletes it with its history; `PREVENT` refuses while it holds run records. Updated in place (set it and apply before destroying). One of " + oneOfDescription(engine.DeletionPolicies) + ".",
			},
			"created_time": schema.StringAttribute{
				Computed:            true,
				MarkdownDescription: "When the workspace was created (RFC 3339).",
				PlanModifiers:       []planmodifier.String{stringplanmodifier.UseStateForUnknown()},
			},
		},
	}
}

func (r *WorkspaceResource) Configure(ctx context.Context, req resource.ConfigureRequest, resp *resource.ConfigureResponse) {
	r.eng = engineFromResource(req, resp)
}

// ModifyPlan shows the default storage_path (relative, like a configured one)
// when none is configured.
func (r *WorkspaceResource) ModifyPlan(ctx context.Context, req resource.ModifyPlanRequest, resp *resource.ModifyPlanResponse) {
	if req.Plan.Raw.IsNull() || r.eng == nil {
		return
	}
	var plan WorkspaceResourceModel
	resp.Diagnostics.Append(req.Plan.Get(ctx, &plan)...)
	if resp.Diagnostics.HasError() || plan.Name.IsUnknown() {
		return
	}
	var cfgPath types.String
	resp.Diagnostics.Append(req.Config.GetAttribute(ctx, path.Root("storage_path"), &cfgPath)...)
	if plan.Backend.ValueString() == engine.BackendShared {
		if !cfgPath.IsNull() {
			resp.Diagnostics.AddAttributeError(path.Root("storage_path"), "storage_path with a shared backend",
				fmt.Sprintf("storage_path = %q names the directory of an embedded workspace; a workspace with backend = %q lives in the provider's shared_backend (each machine's cache is shared_backend.cache_dir). Remove storage_path, or set backend = %q.",
					cfgPath.ValueString(), engine.BackendShared, engine.BackendEmbedded))
			return
		}
		resp.Diagnostics.Append(resp.Plan.SetAttribute(ctx, path.Root("storage_path"), types.StringNull())...)
		return
	}
	if cfgPath.IsNull() {
		resp.Diagnostics.Append(resp.Plan.SetAttribute(ctx, path.Root("storage_path"), engine.DefaultStoragePath(plan.Name.ValueString()))...)
	}
}

// storageReplace replaces the workspace when storage_path names another
// directory; another spelling of the same one is an in-place change of state.
type storageReplace struct{ r *WorkspaceResource }

func (m storageReplace) Description(context.Context) string {
	return "replaces the workspace when storage_path names another directory"
}
func (m storageReplace) MarkdownDescription(ctx context.Context) string { return m.Description(ctx) }

func (m storageReplace) PlanModifyString(ctx context.Context, req planmodifier.StringRequest, resp *planmodifier.StringResponse) {
	if req.State.Raw.IsNull() || req.Plan.Raw.IsNull() || req.ConfigValue.IsNull() || req.ConfigValue.IsUnknown() || req.StateValue.IsNull() {
		return
	}
	if m.r.eng != nil && !m.r.eng.SameStorage(req.StateValue.ValueString(), req.ConfigValue.ValueString()) {
		resp.RequiresReplace = true
	}
}

func (r *WorkspaceResource) Create(ctx context.Context, req resource.CreateRequest, resp *resource.CreateResponse) {
	var plan WorkspaceResourceModel
	resp.Diagnostics.Append(req.Plan.Get(ctx, &plan)...)
	if resp.Diagnostics.HasError() {
		return
	}
	tags := stringMap(ctx, plan.Tags, &resp.Diagnostics)
	if resp.Diagnostics.HasError() {
		return
	}
	ws, err := r.eng.CreateWorkspace(ctx, engine.WorkspaceSpec{
		Name:        plan.Name.ValueString(),
		StoragePath: plan.StoragePath.ValueString(),
		Description: plan.Description.ValueString(),
		Tags:        tags,
		Backend:     plan.Backend.ValueString(),
	})
	if err != nil {
		addEngineError(&resp.Diagnostics, "Cannot create workspace", err)
		return
	}
	plan.fill(ctx, ws, &resp.Diagnostics)
	resp.Diagnostics.Append(resp.State.Set(ctx, &plan)...)
}

func (r *WorkspaceResource) Read(ctx context.Context, req resource.ReadRequest, resp *resource.ReadResponse) {
	var state WorkspaceResourceModel
	resp.Diagnostics.Append(req.State.Get(ctx, &state)...)
	if resp.Diagnostics.HasError() {
		return
	}
	var ws *engine.Workspace
	var err error
	if state.Backend.ValueString() == engine.BackendShared && !state.Name.IsNull() {
		ws, err = r.eng.LocateSharedWorkspace(ctx, state.ID.ValueString(), state.Name.ValueString())
	} else if state.StoragePath.IsNull() || state.Name.IsNull() { // import: found by id (or name)
		ws, err = r.eng.ReadWorkspace(ctx, state.ID.ValueString())
	} else {
		ws, err = r.eng.LocateWorkspace(ctx, state.ID.ValueString(), state.Name.ValueString(), state.StoragePath.ValueString())
	}
	if engine.IsNotFound(err) {
		resp.State.RemoveResource(ctx)
		return
	}
	if err != nil {
		addEngineError(&resp.Diagnostics, "Cannot read workspace", err)
		return
	}
	if state.ForceDestroy.IsNull() {
		state.ForceDestroy = types.BoolValue(false) // after import
	}
	if state.DeletionPolicy.IsNull() {
		state.DeletionPolicy = types.StringValue(engine.DeleteKeepHistory) // after import or upgrade
	}
	state.fill(ctx, ws, &resp.Diagnostics)
	resp.Diagnostics.Append(resp.State.Set(ctx, &state)...)
}

func (r *WorkspaceResource) Update(ctx context.Context, req resource.UpdateRequest, resp *resource.UpdateResponse) {
	var plan WorkspaceResourceModel
	resp.Diagnostics.Append(req.Plan.Get(ctx, &plan)...)
	if resp.Diagnostics.HasError() {
		return
	}
	tags := stringMap(ctx, plan.Tags, &resp.Diagnostics)
	if resp.Diagnostics.HasError() {
		return
	}
	// force_destroy and deletion_policy live only in state; description and
	// tags live in the store.
	ws, err := r.eng.UpdateWorkspace(ctx, plan.ID.ValueString(), plan.Description.ValueString(), tags)
	if err != nil {
		addEngineError(&resp.Diagnostics, "Cannot update workspace", err)
		return
	}
	plan.fill(ctx, ws, &resp.Diagnostics)
	resp.Diagnostics.Append(resp.State.Set(ctx, &plan)...)
}

func (r *WorkspaceResource) Delete(ctx context.Context, req resource.DeleteRequest, resp *resource.DeleteResponse) {
	var state WorkspaceResourceModel
	resp.Diagnostics.Append(req.State.Get(ctx, &state)...)
	if resp.Diagnostics.HasError() {
		return
	}
	policy := state.DeletionPolicy.ValueString()
	if state.ForceDestroy.ValueBool() {
		policy = engine.DeleteAll
	}
	kept, err := r.eng.DestroyWorkspace(ctx, state.ID.ValueString(), policy)
	if err != nil {
		addEngineError(&resp.Diagnostics, "Cannot destroy workspace", err)
		return
	}
	if kept {
		tflog.Info(ctx, "workspace kept on disk with its run history (deletion_policy = KEEP_HISTORY)", map[string]any{"workspace": state.ID.ValueString()})
	}
}

// ImportState takes the workspace's id (its UUID) or its name (a workspace
// in the default location).
func (r *WorkspaceResource) ImportState(ctx context.Context, req resource.ImportStateRequest, resp *resource.ImportStateResponse) {
	if !engine.IsWorkspaceID(req.ID) && !engine.WorkspaceNamePattern.MatchString(req.ID) {
		resp.Diagnostics.AddError("Invalid import id",
			fmt.Sprintf("%q is neither a workspace id (a UUID, e.g. 0f8fad5b-d9cb-469f-a165-70867728950e: the id attribute of aml_workspace) nor a workspace name (3 to 33 letters, digits, '-' or '_')", req.ID))
		return
	}
	resource.ImportStatePassthroughID(ctx, path.Root("id"), req, resp)
}

// UpgradeState moves state of version 0, whose ids were absolute directories,
// to ids that are the workspace's UUID (see upgradeIDs).
func (r *WorkspaceResource) UpgradeState(ctx context.Context) map[int64]resource.StateUpgrader {
	return map[int64]resource.StateUpgrader{0: {StateUpgrader: upgradeIDs(func() *engine.Engine { return r.eng })}}
}

func (m *WorkspaceResourceModel) fill(ctx context.Context, ws *engine.Workspace, diags diagAppender) {
	m.ID = types.StringValue(ws.ID)
	m.Name = types.StringValue(ws.Name)
	m.Backend = types.StringValue(ws.Backend)
	if ws.Backend == engine.BackendShared {
		m.StoragePath = types.StringNull()
	} else if m.StoragePath.IsNull() || m.StoragePath.IsUnknown() {
		m.StoragePath = types.StringValue(ws.StoragePath)
	}
	m.Description = types.StringValue(ws.Description)
	m.CreatedTime = types.StringValue(rfc3339(ws.CreatedAt))
	if len(ws.Tags) > 0 || !m.Tags.IsNull() {
		m.Tags = mapValue(ctx, ws.Tags, diags)
	}
}
