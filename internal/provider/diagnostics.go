package provider

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/hashicorp/terraform-plugin-framework/datasource"
	"github.com/hashicorp/terraform-plugin-framework/diag"
	"github.com/hashicorp/terraform-plugin-framework/path"
	"github.com/hashicorp/terraform-plugin-framework/resource"
	"github.com/hashicorp/terraform-plugin-go/tfprotov6"

	"github.com/openaml/terraform-provider-aml/internal/engine"
)

// addEngineError turns an engine error into a diagnostic, attached to the
// attribute the engine named when it named one.
func addEngineError(diags *diag.Diagnostics, summary string, err error) {
	var fe *engine.FieldError
	if errors.As(err, &fe) {
		diags.AddAttributeError(attrPath(fe.Attr), summary, fmt.Sprintf("%s: %s", fe.Attr, fe.Msg))
		return
	}
	diags.AddError(summary, err.Error())
}

// attrPath converts "environment.python.interpreter_path" or "x.y[2]" to a path.
func attrPath(dotted string) path.Path {
	var p path.Path
	for i, part := range strings.Split(dotted, ".") {
		name, idx, hasIdx := strings.Cut(part, "[")
		if i == 0 {
			p = path.Root(name)
		} else {
			p = p.AtName(name)
		}
		if hasIdx {
			var n int
			if _, err := fmt.Sscanf(idx, "%d]", &n); err == nil {
				p = p.AtListIndex(n)
			}
		}
	}
	return p
}

func engineFromResource(req resource.ConfigureRequest, resp *resource.ConfigureResponse) *engine.Engine {
	if req.ProviderData == nil {
		return nil
	}
	eng, ok := req.ProviderData.(*engine.Engine)
	if !ok {
		resp.Diagnostics.AddError("Unexpected Resource Configure Type",
			fmt.Sprintf("Expected *engine.Engine, got: %T. Please report this issue to the provider developers.", req.ProviderData))
		return nil
	}
	return eng
}

func engineFromDataSource(req datasource.ConfigureRequest, resp *datasource.ConfigureResponse) *engine.Engine {
	if req.ProviderData == nil {
		return nil
	}
	eng, ok := req.ProviderData.(*engine.Engine)
	if !ok {
		resp.Diagnostics.AddError("Unexpected Data Source Configure Type",
			fmt.Sprintf("Expected *engine.Engine, got: %T. Please report this issue to the provider developers.", req.ProviderData))
		return nil
	}
	return eng
}

// importChildID passes an import id of the form "{workspace_id}/<kind>/<name>"
// through, after checking it with the engine's parser.
func importChildID(ctx context.Context, req resource.ImportStateRequest, resp *resource.ImportStateResponse,
	parse func(string) (string, string, error), form, example string) {
	if _, _, err := parse(req.ID); err != nil {
		resp.Diagnostics.AddError("Invalid import id", fmt.Sprintf("%v; expecting %s, e.g. %s", err, form, example))
		return
	}
	resource.ImportStatePassthroughID(ctx, path.Root("id"), req, resp)
}

// withTimeout bounds a long operation by its configured timeout (or def):
// timeout is one of a timeouts.Value's Create, Update or Delete methods.
func withTimeout(ctx context.Context, timeout func(context.Context, time.Duration) (time.Duration, diag.Diagnostics),
	def time.Duration, diags *diag.Diagnostics) (context.Context, context.CancelFunc) {
	d, dd := timeout(ctx, def)
	diags.Append(dd...)
	return context.WithTimeout(ctx, d)
}

// upgradeIDs is the state upgrader from version 0, whose ids began with the
// workspace's absolute directory: every id-valued attribute (id, workspace_id,
// run_configuration_id) names the workspace by its UUID instead, and a
// storage_path that was the default directory becomes the default relative
// path. A workspace that is not on this machine keeps its old id, which still
// opens it where it was.
func upgradeIDs(eng func() *engine.Engine) func(context.Context, resource.UpgradeStateRequest, *resource.UpgradeStateResponse) {
	return func(ctx context.Context, req resource.UpgradeStateRequest, resp *resource.UpgradeStateResponse) {
		if req.RawState == nil || len(req.RawState.JSON) == 0 {
			resp.Diagnostics.AddError("Cannot upgrade state", "the prior state is empty or not JSON; remove the resource from state and import it again")
			return
		}
		var attrs map[string]any
		if err := json.Unmarshal(req.RawState.JSON, &attrs); err != nil {
			resp.Diagnostics.AddError("Cannot upgrade state", fmt.Sprintf("the prior state is not a JSON object (%v); remove the resource from state and import it again", err))
			return
		}
		if e := eng(); e != nil {
			e.UpgradeState(ctx, attrs)
		}
		b, err := json.Marshal(attrs)
		if err != nil {
			resp.Diagnostics.AddError("Cannot upgrade state", err.Error())
			return
		}
		resp.DynamicValue = &tfprotov6.DynamicValue{JSON: b}
	}
}
