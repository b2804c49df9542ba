package provider

import (
	"context"

	"github.com/hashicorp/terraform-plugin-framework/path"
	"github.com/hashicorp/terraform-plugin-framework/resource"
	"github.com/hashicorp/terraform-plugin-framework/types"

	"github.com/openaml/terraform-provider-aml/internal/engine"
)

// notePlannedTarget tells the engine that this plan creates a compute target,
// so the runs planned after it (they refer to it) are not refused as naming an
// unknown target.
func notePlannedTarget(ctx context.Context, eng *engine.Engine, req resource.ModifyPlanRequest) {
	if eng == nil || req.Plan.Raw.IsNull() {
		return
	}
	var ws, name types.String
	req.Plan.GetAttribute(ctx, path.Root("workspace_id"), &ws)
	req.Plan.GetAttribute(ctx, path.Root("name"), &name)
	if known(ws) && known(name) {
		eng.NotePlannedTarget(ws.ValueString(), name.ValueString())
	}
}

func (r *ComputeResource) ModifyPlan(ctx context.Context, req resource.ModifyPlanRequest, resp *resource.ModifyPlanResponse) {
	notePlannedTarget(ctx, r.eng, req)
}

var _ resource.ResourceWithModifyPlan = &ComputeResource{}
