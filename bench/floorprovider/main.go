// Command floorprovider is the plugin-provider floor of the benchmarks: a provider built
// with the same terraform-plugin-framework as terraform-provider-aml, with one resource,
// floor_null, that does no I/O at all (hashicorp/null's null_resource, which cannot be
// downloaded on an offline machine). bench/tf.sh runs a local-exec provisioner under it,
// so what remains between it and our provider is our own work, not plugin start-up.
//
// floor_wide is the same do-nothing resource with aml_experiment_run's schema (43
// attributes, blocks, defaults, validators): what Terraform itself spends on a
// state that size, with no snapshot, store or run behind it (bench/tf.sh's "wide").
package main

import (
	"context"
	"log"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/terraform-plugin-framework/datasource"
	"github.com/hashicorp/terraform-plugin-framework/diag"
	"github.com/hashicorp/terraform-plugin-framework/provider"
	"github.com/hashicorp/terraform-plugin-framework/providerserver"
	"github.com/hashicorp/terraform-plugin-framework/resource"
	"github.com/hashicorp/terraform-plugin-framework/resource/schema"
	"github.com/hashicorp/terraform-plugin-framework/resource/schema/mapplanmodifier"
	"github.com/hashicorp/terraform-plugin-framework/resource/schema/planmodifier"
	"github.com/hashicorp/terraform-plugin-framework/resource/schema/stringplanmodifier"
	"github.com/hashicorp/terraform-plugin-framework/tfsdk"
	"github.com/hashicorp/terraform-plugin-framework/types"
	"github.com/hashicorp/terraform-plugin-go/tfprotov6"
	"github.com/hashicorp/terraform-plugin-go/tfprotov6/tf6server"
	"github.com/hashicorp/terraform-plugin-go/tftypes"

	amlprovider "github.com/openaml/terraform-provider-aml/internal/provider"
)

func main() {
	err := tf6server.Serve("registry.terraform.io/openaml/floor", func() tfprotov6.ProviderServer {
		return &wideFast{ProviderServer: providerserver.NewProtocol6(&floorProvider{})()}
	})
	if err != nil {
		log.Fatal(err.Error())
	}
}

// wideFast answers floor_wide's unchanged plans, refreshes and current-version
// state upgrades itself, as the aml provider's fast path does for an unchanged
// run (internal/provider/fastpath.go) but with no check behind it: so that
// floor_wide costs what Terraform spends on such a state plus the framework's
// validation, and nothing of the framework's per-attribute plan and read walks.
// floor_null goes through the framework, as hashicorp/null does.
type wideFast struct{ tfprotov6.ProviderServer }

var wideType = sync.OnceValues(func() (tftypes.Type, int64) {
	ctx := context.Background()
	var resp resource.SchemaResponse
	(&wideResource{}).Schema(ctx, resource.SchemaRequest{}, &resp)
	return resp.Schema.Type().TerraformType(ctx), resp.Schema.Version
})

func (s *wideFast) PlanResourceChange(ctx context.Context, req *tfprotov6.PlanResourceChangeRequest) (*tfprotov6.PlanResourceChangeResponse, error) {
	if ty, _ := wideType(); req.TypeName == "floor_wide" && req.PriorState != nil && req.ProposedNewState != nil {
		prior, err1 := req.PriorState.Unmarshal(ty)
		proposed, err2 := req.ProposedNewState.Unmarshal(ty)
		if err1 == nil && err2 == nil && !prior.IsNull() && prior.Equal(proposed) {
			return &tfprotov6.PlanResourceChangeResponse{PlannedState: req.PriorState, PlannedPrivate: req.PriorPrivate}, nil
		}
	}
	return s.ProviderServer.PlanResourceChange(ctx, req)
}

func (s *wideFast) ReadResource(ctx context.Context, req *tfprotov6.ReadResourceRequest) (*tfprotov6.ReadResourceResponse, error) {
	if req.TypeName == "floor_wide" && req.CurrentState != nil {
		return &tfprotov6.ReadResourceResponse{NewState: req.CurrentState, Private: req.Private}, nil
	}
	return s.ProviderServer.ReadResource(ctx, req)
}

func (s *wideFast) UpgradeResourceState(ctx context.Context, req *tfprotov6.UpgradeResourceStateRequest) (*tfprotov6.UpgradeResourceStateResponse, error) {
	if ty, version := wideType(); req.TypeName == "floor_wide" && req.RawState != nil && req.Version == version {
		val, err := req.RawState.UnmarshalWithOpts(ty, tfprotov6.UnmarshalOpts{ValueFromJSONOpts: tftypes.ValueFromJSONOpts{IgnoreUndefinedAttributes: true}})
		if err == nil {
			if dv, err := tfprotov6.NewDynamicValue(ty, val); err == nil {
				return &tfprotov6.UpgradeResourceStateResponse{UpgradedState: &dv}, nil
			}
		}
	}
	return s.ProviderServer.UpgradeResourceState(ctx, req)
}

type floorProvider struct{}

func (p *floorProvider) Metadata(_ context.Context, _ provider.MetadataRequest, resp *provider.MetadataResponse) {
	resp.TypeName = "floor"
}

func (p *floorProvider) Schema(_ context.Context, _ provider.SchemaRequest, resp *provider.SchemaResponse) {
}

func (p *floorProvider) Configure(_ context.Context, _ provider.ConfigureRequest, _ *provider.ConfigureResponse) {
}

func (p *floorProvider) Resources(_ context.Context) []func() resource.Resource {
	return []func() resource.Resource{
		func() resource.Resource { return &nullResource{} },
		func() resource.Resource { return &wideResource{} },
	}
}

func (p *floorProvider) DataSources(_ context.Context) []func() datasource.DataSource { return nil }

// nullResource is null_resource: an id and a triggers map that forces replacement.
type nullResource struct{}

type nullModel struct {
	ID       types.String `tfsdk:"id"`
	Triggers types.Map    `tfsdk:"triggers"`
}

var seq atomic.Int64

func (r *nullResource) Metadata(_ context.Context, req resource.MetadataRequest, resp *resource.MetadataResponse) {
	resp.TypeName = req.ProviderTypeName + "_null"
}

func (r *nullResource) Schema(_ context.Context, _ resource.SchemaRequest, resp *resource.SchemaResponse) {
	resp.Schema = schema.Schema{
		Attributes: map[string]schema.Attribute{
			"id": schema.StringAttribute{
				Computed:      true,
				PlanModifiers: []planmodifier.String{stringplanmodifier.UseStateForUnknown()},
			},
			"triggers": schema.MapAttribute{
				ElementType:   types.StringType,
				Optional:      true,
				PlanModifiers: []planmodifier.Map{mapplanmodifier.RequiresReplace()},
			},
		},
	}
}

func (r *nullResource) Create(ctx context.Context, req resource.CreateRequest, resp *resource.CreateResponse) {
	var m nullModel
	resp.Diagnostics.Append(req.Plan.Get(ctx, &m)...)
	if resp.Diagnostics.HasError() {
		return
	}
	m.ID = types.StringValue(strconv.FormatInt(time.Now().UnixNano(), 10) + "-" + strconv.FormatInt(seq.Add(1), 10))
	resp.Diagnostics.Append(resp.State.Set(ctx, &m)...)
}

func (r *nullResource) Read(ctx context.Context, req resource.ReadRequest, resp *resource.ReadResponse) {
	var m nullModel
	resp.Diagnostics.Append(req.State.Get(ctx, &m)...)
	if resp.Diagnostics.HasError() {
		return
	}
	resp.Diagnostics.Append(resp.State.Set(ctx, &m)...)
}

// Update has nothing to do: every attribute but id forces replacement.
func (r *nullResource) Update(ctx context.Context, req resource.UpdateRequest, resp *resource.UpdateResponse) {
	var m nullModel
	resp.Diagnostics.Append(req.Plan.Get(ctx, &m)...)
	resp.Diagnostics.Append(resp.State.Set(ctx, &m)...)
}

func (r *nullResource) Delete(_ context.Context, _ resource.DeleteRequest, _ *resource.DeleteResponse) {
}

// wideResource has aml_experiment_run's schema and does nothing: Create and
// Update store the plan with every unknown (the computed results) set to null,
// and a fresh id.
type wideResource struct{}

func (r *wideResource) Metadata(_ context.Context, req resource.MetadataRequest, resp *resource.MetadataResponse) {
	resp.TypeName = req.ProviderTypeName + "_wide"
}

func (r *wideResource) Schema(ctx context.Context, req resource.SchemaRequest, resp *resource.SchemaResponse) {
	(&amlprovider.ExperimentRunResource{}).Schema(ctx, req, resp)
}

func (r *wideResource) store(plan tftypes.Value) (tftypes.Value, error) {
	id := strconv.FormatInt(time.Now().UnixNano(), 10) + "-" + strconv.FormatInt(seq.Add(1), 10)
	return tftypes.Transform(plan, func(p *tftypes.AttributePath, v tftypes.Value) (tftypes.Value, error) {
		if v.IsKnown() {
			return v, nil
		}
		if p.Equal(tftypes.NewAttributePath().WithAttributeName("id")) {
			return tftypes.NewValue(tftypes.String, id), nil
		}
		return tftypes.NewValue(v.Type(), nil), nil
	})
}

func (r *wideResource) Create(_ context.Context, req resource.CreateRequest, resp *resource.CreateResponse) {
	r.save(req.Plan, &resp.State, &resp.Diagnostics)
}

func (r *wideResource) Read(_ context.Context, _ resource.ReadRequest, _ *resource.ReadResponse) {}

func (r *wideResource) Update(_ context.Context, req resource.UpdateRequest, resp *resource.UpdateResponse) {
	r.save(req.Plan, &resp.State, &resp.Diagnostics)
}

// save stores plan, its unknowns set to null (store), as the new state.
func (r *wideResource) save(plan tfsdk.Plan, state *tfsdk.State, diags *diag.Diagnostics) {
	v, err := r.store(plan.Raw)
	if err != nil {
		diags.AddError("floor_wide", err.Error())
		return
	}
	state.Raw = v
}

func (r *wideResource) Delete(_ context.Context, _ resource.DeleteRequest, _ *resource.DeleteResponse) {
}
