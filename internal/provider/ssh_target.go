package provider

import (
	"context"
	"time"

	"github.com/hashicorp/terraform-plugin-framework-timeouts/resource/timeouts"
	"github.com/hashicorp/terraform-plugin-framework/diag"
	"github.com/hashicorp/terraform-plugin-framework/resource"
	"github.com/hashicorp/terraform-plugin-framework/resource/schema"
	"github.com/hashicorp/terraform-plugin-framework/types"
	"github.com/hashicorp/terraform-plugin-log/tflog"

	"github.com/openaml/terraform-provider-aml/internal/engine"
)

// sshModel is the model of a compute target reached over SSH: the shared SSH
// part (host) and what its kind adds.
type sshModel interface {
	host() *RemoteComputeResourceModel
	// attach submits the attachment to the engine.
	attach(ctx context.Context, eng *engine.Engine, spec engine.RemoteSpec, creds engine.Credentials, diags *diag.Diagnostics) (*engine.Target, error)
	// fillKind copies the kind's own spec and state; imported is true on import.
	fillKind(ctx context.Context, t *engine.Target, imported bool, diags *diag.Diagnostics)
}

func (m *RemoteComputeResourceModel) host() *RemoteComputeResourceModel { return m }

func (m *RemoteComputeResourceModel) attach(ctx context.Context, eng *engine.Engine, spec engine.RemoteSpec, creds engine.Credentials, diags *diag.Diagnostics) (*engine.Target, error) {
	return eng.AttachRemote(ctx, m.WorkspaceID.ValueString(), spec, creds)
}

func (m *RemoteComputeResourceModel) fillKind(ctx context.Context, t *engine.Target, imported bool, diags *diag.Diagnostics) {
}

// sshTargetResource is a compute target reached over SSH; M is its model.
type sshTargetResource[M any, P interface {
	*M
	sshModel
}] struct {
	eng           *engine.Engine
	typeSuffix    string
	schema        func(context.Context) schema.Schema
	importExample string
}

var (
	_ resource.ResourceWithConfigure        = &sshTargetResource[RemoteComputeResourceModel, *RemoteComputeResourceModel]{}
	_ resource.ResourceWithImportState      = &sshTargetResource[RemoteComputeResourceModel, *RemoteComputeResourceModel]{}
	_ resource.ResourceWithConfigValidators = &sshTargetResource[RemoteComputeResourceModel, *RemoteComputeResourceModel]{}
	_ resource.ResourceWithModifyPlan       = &sshTargetResource[RemoteComputeResourceModel, *RemoteComputeResourceModel]{}
	_ resource.ResourceWithUpgradeState     = &sshTargetResource[RemoteComputeResourceModel, *RemoteComputeResourceModel]{}
)

func (r *sshTargetResource[M, P]) Metadata(ctx context.Context, req resource.MetadataRequest, resp *resource.MetadataResponse) {
	resp.TypeName = req.ProviderTypeName + r.typeSuffix
}

func (r *sshTargetResource[M, P]) Schema(ctx context.Context, req resource.SchemaRequest, resp *resource.SchemaResponse) {
	resp.Schema = r.schema(ctx)
	resp.Schema.Version = 1 // 0: ids began with the workspace's directory
}

// UpgradeState moves state of version 0 to ids that name the workspace by its id.
func (r *sshTargetResource[M, P]) UpgradeState(ctx context.Context) map[int64]resource.StateUpgrader {
	return map[int64]resource.StateUpgrader{0: {StateUpgrader: upgradeIDs(func() *engine.Engine { return r.eng })}}
}

func (r *sshTargetResource[M, P]) Configure(ctx context.Context, req resource.ConfigureRequest, resp *resource.ConfigureResponse) {
	r.eng = engineFromResource(req, resp)
}

func (r *sshTargetResource[M, P]) ModifyPlan(ctx context.Context, req resource.ModifyPlanRequest, resp *resource.ModifyPlanResponse) {
	notePlannedTarget(ctx, r.eng, req)
}

func (r *sshTargetResource[M, P]) Create(ctx context.Context, req resource.CreateRequest, resp *resource.CreateResponse) {
	var plan, config M
	resp.Diagnostics.Append(req.Plan.Get(ctx, &plan)...)
	resp.Diagnostics.Append(req.Config.Get(ctx, &config)...)
	if resp.Diagnostics.HasError() {
		return
	}
	pm, cm := P(&plan).host(), P(&config).host()
	spec, creds := pm.spec(ctx, &resp.Diagnostics)
	// Write-only values exist in the configuration alone.
	for _, wo := range []struct {
		v   types.String
		dst *string
	}{{cm.PasswordWO, &creds.Password}, {cm.PrivateKeyWO, &creds.PrivateKey}, {cm.PrivateKeyPassphraseWO, &creds.Passphrase}} {
		if !wo.v.IsNull() && !wo.v.IsUnknown() {
			*wo.dst, creds.WriteOnly = wo.v.ValueString(), true
		}
	}
	if resp.Diagnostics.HasError() {
		return
	}
	ctx, cancel := withTimeout(ctx, pm.Timeouts.Create, 10*time.Minute, &resp.Diagnostics)
	defer cancel()
	ctx = tflog.MaskFieldValuesWithFieldKeys(ctx, "password", "private_key", "private_key_passphrase")
	tflog.Debug(ctx, "attaching SSH host", map[string]any{"address": spec.Address, "port": spec.Port, "username": spec.Username})
	t, err := P(&plan).attach(ctx, r.eng, spec, creds, &resp.Diagnostics)
	if err != nil {
		addEngineError(&resp.Diagnostics, "Cannot attach "+spec.Address, err)
		return
	}
	pm.fill(ctx, t, &resp.Diagnostics)
	P(&plan).fillKind(ctx, t, false, &resp.Diagnostics)
	resp.Diagnostics.Append(resp.State.Set(ctx, &plan)...)
}

func (r *sshTargetResource[M, P]) Read(ctx context.Context, req resource.ReadRequest, resp *resource.ReadResponse) {
	var state M
	resp.Diagnostics.Append(req.State.Get(ctx, &state)...)
	if resp.Diagnostics.HasError() {
		return
	}
	sm := P(&state).host()
	t, err := r.eng.ReadTarget(ctx, sm.ID.ValueString())
	if engine.IsNotFound(err) {
		resp.State.RemoveResource(ctx)
		return
	}
	if err != nil {
		addEngineError(&resp.Diagnostics, "Cannot read compute target", err)
		return
	}
	imported := sm.WorkspaceID.IsNull()
	if imported { // credentials come from the workspace
		sm.importSecrets(ctx, r.eng, t, &resp.Diagnostics)
		if resp.Diagnostics.HasError() {
			return
		}
	}
	sm.fill(ctx, t, &resp.Diagnostics)
	P(&state).fillKind(ctx, t, imported, &resp.Diagnostics)
	resp.Diagnostics.Append(resp.State.Set(ctx, &state)...)
}

// Update only ever changes force_detach (state only): every other input replaces.
func (r *sshTargetResource[M, P]) Update(ctx context.Context, req resource.UpdateRequest, resp *resource.UpdateResponse) {
	var plan, state M
	resp.Diagnostics.Append(req.Plan.Get(ctx, &plan)...)
	resp.Diagnostics.Append(req.State.Get(ctx, &state)...)
	if resp.Diagnostics.HasError() {
		return
	}
	P(&state).host().ForceDetach = P(&plan).host().ForceDetach
	P(&state).host().Timeouts = P(&plan).host().Timeouts
	resp.Diagnostics.Append(resp.State.Set(ctx, &state)...)
}

func (r *sshTargetResource[M, P]) Delete(ctx context.Context, req resource.DeleteRequest, resp *resource.DeleteResponse) {
	var state M
	resp.Diagnostics.Append(req.State.Get(ctx, &state)...)
	if resp.Diagnostics.HasError() {
		return
	}
	sm := P(&state).host()
	ctx, cancel := withTimeout(ctx, sm.Timeouts.Delete, 10*time.Minute, &resp.Diagnostics)
	defer cancel()
	if err := r.eng.DetachTarget(ctx, sm.ID.ValueString(), sm.ForceDetach.ValueBool()); err != nil {
		addEngineError(&resp.Diagnostics, "Cannot detach compute target", err)
	}
}

// ImportState takes "{workspace_id}/targets/{name}".
func (r *sshTargetResource[M, P]) ImportState(ctx context.Context, req resource.ImportStateRequest, resp *resource.ImportStateResponse) {
	importChildID(ctx, req, resp, engine.ParseTargetID, "{workspace_id}/targets/{name}", r.importExample)
}

// importSecrets restores the credentials (and bastion) of an imported target
// from the workspace; write-only ones stay out of state.
func (m *RemoteComputeResourceModel) importSecrets(ctx context.Context, eng *engine.Engine, t *engine.Target, diags *diag.Diagnostics) {
	var creds engine.Credentials
	if err := eng.TargetSecrets(ctx, m.ID.ValueString(), &creds); err != nil {
		addEngineError(diags, "Cannot read compute target credentials", err)
		return
	}
	if creds.WriteOnly {
		// Attached with write-only secrets: state gets none (the
		// configuration names the *_wo attributes, with their versions).
		m.Password, m.PrivateKey, m.PrivateKeyPassphrase = types.StringNull(), types.StringNull(), types.StringNull()
	} else {
		m.Password, m.PrivateKey, m.PrivateKeyPassphrase = optString(creds.Password), optString(creds.PrivateKey), optString(creds.Passphrase)
	}
	m.ForceDetach = types.BoolValue(false)
	m.Timeouts = timeouts.Value{Object: types.ObjectNull(m.Timeouts.AttributeTypes(ctx))}
	m.Bastion = types.ObjectNull(bastionTypes)
	var spec engine.RemoteSpec
	if err := t.Decode(&spec, nil); err != nil {
		addEngineError(diags, "Cannot read compute target", err)
		return
	}
	if b := spec.Bastion; b != nil {
		m.Bastion = sshHostValue(ctx, b, creds.Bastion, diags)
	}
}
