package provider

import (
	"context"

	"github.com/hashicorp/terraform-plugin-framework-validators/datasourcevalidator"
	"github.com/hashicorp/terraform-plugin-framework-validators/stringvalidator"
	"github.com/hashicorp/terraform-plugin-framework/datasource"
	"github.com/hashicorp/terraform-plugin-framework/datasource/schema"
	"github.com/hashicorp/terraform-plugin-framework/path"
	"github.com/hashicorp/terraform-plugin-framework/schema/validator"
	"github.com/hashicorp/terraform-plugin-framework/types"

	"github.com/openaml/terraform-provider-aml/internal/engine"
)

var (
	_ datasource.DataSourceWithConfigure        = &WorkspaceDataSource{}
	_ datasource.DataSourceWithConfigValidators = &WorkspaceDataSource{}
)

// NewWorkspaceDataSource is the data "aml_workspace" factory.
func NewWorkspaceDataSource() datasource.DataSource { return &WorkspaceDataSource{} }

// WorkspaceDataSource looks a workspace up by name or path.
type WorkspaceDataSource struct{ eng *engine.Engine }

// WorkspaceDataSourceModel is data "aml_workspace".
type WorkspaceDataSourceModel struct {
	ID          types.String `tfsdk:"id"`
	Name        types.String `tfsdk:"name"`
	StoragePath types.String `tfsdk:"storage_path"`
	Description types.String `tfsdk:"description"`
	Tags        types.Map    `tfsdk:"tags"`
	CreatedTime types.String `tfsdk:"created_time"`
	RunCount    types.Int64  `tfsdk:"run_count"`
	Backend     types.String `tfsdk:"backend"`
}

func (d *WorkspaceDataSource) Metadata(ctx context.Context, req datasource.MetadataRequest, resp *datasource.MetadataResponse) {
	resp.TypeName = req.ProviderTypeName + "_workspace"
}

func (d *WorkspaceDataSource) Schema(ctx context.Context, req datasource.SchemaRequest, resp *datasource.SchemaResponse) {
	resp.Schema = schema.Schema{
		MarkdownDescription: "Reads an existing workspace, by `name` (in the default location `" + engine.DefaultWorkspaceRoot + "/<name>`) or by `storage_path`.",
		Attributes: map[string]schema.Attribute{
			"id":           schema.StringAttribute{Computed: true, MarkdownDescription: "The workspace's id (a UUID)."},
			"name":         schema.StringAttribute{Optional: true, Computed: true, MarkdownDescription: "Workspace name; looked up under `" + engine.DefaultWorkspaceRoot + "` when `storage_path` is not set."},
			"storage_path": schema.StringAttribute{Optional: true, Computed: true, MarkdownDescription: "Workspace directory, as written (relative paths are resolved against Terraform's working directory)."},
			"description":  schema.StringAttribute{Computed: true, MarkdownDescription: "Description."},
			"tags":         schema.MapAttribute{ElementType: types.StringType, Computed: true, MarkdownDescription: "Tags."},
			"created_time": schema.StringAttribute{Computed: true, MarkdownDescription: "Creation time (RFC 3339)."},
			"run_count":    schema.Int64Attribute{Computed: true, MarkdownDescription: "Number of run records in the workspace."},
			"backend": schema.StringAttribute{
				Optional: true, Computed: true,
				MarkdownDescription: "`" + engine.BackendEmbedded + "` (default: a directory, by `name` or `storage_path`) or `" + engine.BackendShared + "` (by `name`, in the provider's `shared_backend`).",
				Validators:          []validator.String{stringvalidator.OneOf(engine.Backends...)},
			},
		},
	}
}

func (d *WorkspaceDataSource) ConfigValidators(ctx context.Context) []datasource.ConfigValidator {
	return []datasource.ConfigValidator{
		datasourcevalidator.AtLeastOneOf(path.MatchRoot("name"), path.MatchRoot("storage_path")),
	}
}

func (d *WorkspaceDataSource) Configure(ctx context.Context, req datasource.ConfigureRequest, resp *datasource.ConfigureResponse) {
	d.eng = engineFromDataSource(req, resp)
}

func (d *WorkspaceDataSource) Read(ctx context.Context, req datasource.ReadRequest, resp *datasource.ReadResponse) {
	var m WorkspaceDataSourceModel
	resp.Diagnostics.Append(req.Config.Get(ctx, &m)...)
	if resp.Diagnostics.HasError() {
		return
	}
	var ws *engine.Workspace
	var err error
	if m.Backend.ValueString() == engine.BackendShared {
		if m.Name.IsNull() || !m.StoragePath.IsNull() {
			resp.Diagnostics.AddAttributeError(path.Root("name"), "Shared workspaces are found by name",
				"backend = \""+engine.BackendShared+"\" looks the workspace up by name in the provider's shared_backend: set name, and no storage_path.")
			return
		}
		ws, err = d.eng.LocateSharedWorkspace(ctx, "", m.Name.ValueString())
	} else {
		ws, err = d.eng.LocateWorkspace(ctx, "", m.Name.ValueString(), m.StoragePath.ValueString())
	}
	if err != nil {
		addEngineError(&resp.Diagnostics, "Cannot read workspace", err)
		return
	}
	if !m.Name.IsNull() && m.Name.ValueString() != ws.Name {
		resp.Diagnostics.AddAttributeError(path.Root("name"), "Workspace name mismatch",
			"name: "+ws.Dir+" holds workspace "+ws.Name+", not "+m.Name.ValueString())
		return
	}
	m.ID = types.StringValue(ws.ID)
	m.Name = types.StringValue(ws.Name)
	m.StoragePath = types.StringValue(ws.StoragePath)
	if ws.Backend == engine.BackendShared {
		m.StoragePath = types.StringNull()
	}
	m.Backend = types.StringValue(ws.Backend)
	m.Description = types.StringValue(ws.Description)
	m.Tags = mapValue(ctx, ws.Tags, &resp.Diagnostics)
	m.CreatedTime = types.StringValue(rfc3339(ws.CreatedAt))
	m.RunCount = types.Int64Value(int64(ws.RunCount))
	resp.Diagnostics.Append(resp.State.Set(ctx, &m)...)
}
