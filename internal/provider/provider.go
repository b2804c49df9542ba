// Package provider is the Terraform glue of terraform-provider-aml: schemas,
// validators, plan modifiers, model <-> engine conversion and diagnostics. It does
// no I/O of its own; everything goes through internal/engine.
package provider

import (
	"context"
	"fmt"

	"github.com/hashicorp/terraform-plugin-framework-validators/int64validator"
	"github.com/hashicorp/terraform-plugin-framework/datasource"
	"github.com/hashicorp/terraform-plugin-framework/path"
	"github.com/hashicorp/terraform-plugin-framework/provider"
	"github.com/hashicorp/terraform-plugin-framework/provider/schema"
	"github.com/hashicorp/terraform-plugin-framework/resource"
	"github.com/hashicorp/terraform-plugin-framework/schema/validator"
	"github.com/hashicorp/terraform-plugin-framework/types"

	"github.com/openaml/terraform-provider-aml/internal/engine"
	"github.com/openaml/terraform-provider-aml/internal/engine/snapshot"
)

var _ provider.Provider = &AmlProvider{}

// AmlProvider is the aml provider.
type AmlProvider struct {
	version string
	eng     engineHolder // the configured engine, for fastServer
}

// AmlProviderModel is the provider block.
type AmlProviderModel struct {
	SnapshotMaxBytes types.Int64 `tfsdk:"snapshot_max_bytes"`
	SnapshotMaxFiles types.Int64 `tfsdk:"snapshot_max_files"`
	EnvCacheMaxBytes types.Int64 `tfsdk:"environment_cache_max_bytes"`
	OutputsMaxBytes  types.Int64 `tfsdk:"outputs_max_bytes"`

	SharedBackend *SharedBackendModel `tfsdk:"shared_backend"`
}

// New returns the provider factory.
func New(version string) func() provider.Provider {
	return func() provider.Provider { return &AmlProvider{version: version} }
}

func (p *AmlProvider) Metadata(ctx context.Context, req provider.MetadataRequest, resp *provider.MetadataResponse) {
	resp.TypeName = "aml"
	resp.Version = p.version
}

func (p *AmlProvider) Schema(ctx context.Context, req provider.SchemaRequest, resp *provider.SchemaResponse) {
	resp.Schema = schema.Schema{
		MarkdownDescription: "Azure-ML-style compute targets and training runs on machines you own. " +
			"Workspaces live in a directory (embedded) or, with `shared_backend`, in PostgreSQL and an S3-compatible bucket that every machine reaches; `local` is the machine running Terraform.",
		Blocks: map[string]schema.Block{
			"shared_backend": sharedBackendBlock(),
		},
		Attributes: map[string]schema.Attribute{
			"snapshot_max_bytes": schema.Int64Attribute{
				MarkdownDescription: fmt.Sprintf("Largest total size of a run's source snapshot, in bytes. Default %d (300 MB, as Azure ML).", snapshot.DefaultMaxBytes),
				Optional:            true,
				Validators:          []validator.Int64{int64validator.AtLeast(1)},
			},
			"environment_cache_max_bytes": schema.Int64Attribute{
				MarkdownDescription: "Largest size of a workspace's cache of system-managed environments; after a build passes it, the least recently used environments that no run is using are removed. Unset: no limit.",
				Optional:            true,
				Validators:          []validator.Int64{int64validator.AtLeast(1)},
			},
			"outputs_max_bytes": schema.Int64Attribute{
				MarkdownDescription: fmt.Sprintf("Largest total size of the outputs and logs a run on a remote target brings back to the machine running Terraform, in bytes. Default %d (2 GiB). "+
					"What is over stays on the host; the run's `message` says where.", engine.DefaultCollectMaxBytes),
				Optional:   true,
				Validators: []validator.Int64{int64validator.AtLeast(1)},
			},
			"snapshot_max_files": schema.Int64Attribute{
				MarkdownDescription: fmt.Sprintf("Largest number of files in a run's source snapshot. Default %d (as Azure ML).", snapshot.DefaultMaxFiles),
				Optional:            true,
				Validators:          []validator.Int64{int64validator.AtLeast(1)},
			},
		},
	}
}

func (p *AmlProvider) Configure(ctx context.Context, req provider.ConfigureRequest, resp *provider.ConfigureResponse) {
	var data AmlProviderModel
	resp.Diagnostics.Append(req.Config.Get(ctx, &data)...)
	if resp.Diagnostics.HasError() {
		return
	}
	opts := engine.Options{}
	if !data.SnapshotMaxBytes.IsNull() && !data.SnapshotMaxBytes.IsUnknown() {
		opts.SnapshotLimits.MaxBytes = data.SnapshotMaxBytes.ValueInt64()
	}
	if !data.SnapshotMaxFiles.IsNull() && !data.SnapshotMaxFiles.IsUnknown() {
		opts.SnapshotLimits.MaxFiles = int(data.SnapshotMaxFiles.ValueInt64())
	}
	if !data.EnvCacheMaxBytes.IsNull() && !data.EnvCacheMaxBytes.IsUnknown() {
		opts.EnvCacheMaxBytes = data.EnvCacheMaxBytes.ValueInt64()
	}
	if !data.OutputsMaxBytes.IsNull() && !data.OutputsMaxBytes.IsUnknown() {
		opts.CollectMaxBytes = data.OutputsMaxBytes.ValueInt64()
	}
	if data.SharedBackend.unknown() {
		resp.Diagnostics.AddAttributeError(path.Root("shared_backend"), "Shared backend not known yet",
			"shared_backend takes values that are only known after apply (another resource's attributes); the provider needs them to plan. Use values known at plan time (variables, data sources).")
		return
	}
	opts.Shared = data.SharedBackend.toEngine(&resp.Diagnostics)
	if resp.Diagnostics.HasError() {
		return
	}
	eng, err := engine.New(opts)
	if err != nil {
		resp.Diagnostics.AddError("Cannot start the aml engine", err.Error())
		return
	}
	resp.DataSourceData = eng
	resp.ResourceData = eng
	p.eng.Store(eng)
}

func (p *AmlProvider) Resources(ctx context.Context) []func() resource.Resource {
	return []func() resource.Resource{
		NewWorkspaceResource,
		NewRunConfigurationResource,
		NewExperimentRunResource,
		NewRemoteComputeResource,
		NewComputeResource,
		NewHDInsightAttachmentResource,
		NewBatchAttachmentResource,
	}
}

func (p *AmlProvider) DataSources(ctx context.Context) []func() datasource.DataSource {
	return []func() datasource.DataSource{
		NewWorkspaceDataSource,
		NewRunDataSource,
		NewRunsDataSource,
		NewComputeTargetDataSource,
	}
}
