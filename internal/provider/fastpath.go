package provider

import (
	"bytes"
	"context"
	"encoding/json"
	"math/big"
	"reflect"
	"sync"
	"sync/atomic"

	"github.com/hashicorp/terraform-plugin-framework/attr"
	"github.com/hashicorp/terraform-plugin-framework/datasource"
	"github.com/hashicorp/terraform-plugin-framework/path"
	"github.com/hashicorp/terraform-plugin-framework/providerserver"
	"github.com/hashicorp/terraform-plugin-framework/resource"
	"github.com/hashicorp/terraform-plugin-framework/resource/schema"
	"github.com/hashicorp/terraform-plugin-framework/resource/schema/defaults"
	"github.com/hashicorp/terraform-plugin-framework/tfsdk"
	"github.com/hashicorp/terraform-plugin-go/tfprotov6"
	"github.com/hashicorp/terraform-plugin-go/tftypes"

	"github.com/openaml/terraform-provider-aml/internal/engine"
)

// NewProtocol6Server returns the provider's protocol-6 server: the framework's
// server for a new AmlProvider, with the unchanged-run plan fast path in front
// of it. main.go serves it and the acceptance tests use it, so every plan in the
// tests goes through the same path as a user's.
func NewProtocol6Server(version string) func() tfprotov6.ProviderServer {
	return func() tfprotov6.ProviderServer {
		p := &AmlProvider{version: version}
		return &fastServer{ProviderServer: providerserver.NewProtocol6(p)(), p: p}
	}
}

// fastServer answers PlanResourceChange for an aml_experiment_run whose
// configuration did not change (Terraform's proposed new state equals the prior
// state) without the framework, when re-checking it finds nothing changed
// either: the same snapshot hash, the script still there, the run still fitting
// its target. It then plans exactly what the framework would: the prior state,
// unchanged, and the prior private state.
//
// Why: for such a run the framework's plan does nothing, at a cost that grows
// with the square of the schema's top-level attributes (for each attribute it
// sets the attribute through a path walk that rebuilds the attribute map and
// re-encodes the whole object), on every run of every plan. On a 100-run sweep
// that was half of the provider's CPU (bench/README.md, section 2b). Anything
// else (a changed input, an unknown, an error to report, a run not yet in
// state) goes to the framework, which remains the one place that plans a change
// and words its diagnostics.
type fastServer struct {
	tfprotov6.ProviderServer
	p *AmlProvider
}

// fastPlans, fastCreates, fastReads, fastUpgrades and fastValidations count
// the requests the fast path answered (for the tests).
var fastPlans, fastCreates, fastReads, fastUpgrades, fastValidations atomic.Int64

// runSchema is aml_experiment_run's state type, for decoding raw states, and
// its schema version.
var runSchema = sync.OnceValues(func() (tftypes.Type, int64) {
	ctx := context.Background()
	s := runResourceSchema()
	return s.Type().TerraformType(ctx), s.Version
})

// runResourceSchema is aml_experiment_run's schema, built once.
var runResourceSchema = sync.OnceValue(func() schema.Schema {
	var resp resource.SchemaResponse
	(&ExperimentRunResource{}).Schema(context.Background(), resource.SchemaRequest{}, &resp)
	return resp.Schema
})

func runStateType() tftypes.Type {
	ty, _ := runSchema()
	return ty
}

const experimentRunType = "aml_experiment_run"

func (s *fastServer) PlanResourceChange(ctx context.Context, req *tfprotov6.PlanResourceChangeRequest) (*tfprotov6.PlanResourceChangeResponse, error) {
	if req.TypeName == experimentRunType {
		if eng := s.p.eng.Load(); eng != nil {
			if unchangedRunPlan(ctx, eng, req) {
				fastPlans.Add(1)
				return &tfprotov6.PlanResourceChangeResponse{
					PlannedState:   req.PriorState,
					PlannedPrivate: req.PriorPrivate,
				}, nil
			}
			if resp, ok := createRunPlan(ctx, eng, req); ok {
				fastCreates.Add(1)
				return resp, nil
			}
		}
	}
	return s.ProviderServer.PlanResourceChange(ctx, req)
}

// createRunPlan plans a new aml_experiment_run (no prior state) with the
// framework's own steps for a create, at a cost that grows with the schema's
// size rather than its square:
//
//   - each attribute the configuration sets keeps Terraform's proposed value;
//   - each one it leaves null becomes its Default, or unknown when it is
//     computed without one (the framework's TransformDefaults and
//     MarkComputedNilsAsUnknown), or stays null (runCreateRules);
//   - the attributes' plan modifiers are left out: on a create they do
//     nothing (RequiresReplace asks nothing without state; UseStateForUnknown
//     keeps nothing without state);
//   - then the resource's own ModifyPlan runs on the whole plan, as the
//     framework calls it, and sets the snapshot's attributes.
//
// A plan that is not plain (a diagnostic, a replacement, a deferral, private
// state) is left to the framework, which plans it again and words what it has
// to say. TestFastCreatePlanMatchesFramework holds the two paths to the same
// answers.
func createRunPlan(ctx context.Context, eng *engine.Engine, req *tfprotov6.PlanResourceChangeRequest) (*tfprotov6.PlanResourceChangeResponse, bool) {
	if req.PriorState == nil || req.ProposedNewState == nil || req.Config == nil || len(req.PriorPrivate) != 0 {
		return nil, false
	}
	rules, ok := runCreateRules()
	if !ok {
		return nil, false
	}
	full := runStateType().(tftypes.Object)
	prior, err := req.PriorState.Unmarshal(full)
	if err != nil || !prior.IsNull() {
		return nil, false
	}
	config, err := req.Config.Unmarshal(full)
	if err != nil {
		return nil, false
	}
	proposed, err := req.ProposedNewState.Unmarshal(full)
	if err != nil {
		return nil, false
	}
	var cAttrs, pAttrs map[string]tftypes.Value
	if config.As(&cAttrs) != nil || proposed.As(&pAttrs) != nil || cAttrs == nil || pAttrs == nil {
		return nil, false
	}
	planned := make(map[string]tftypes.Value, len(full.AttributeTypes))
	for name, ty := range full.AttributeTypes {
		r, c := rules[name], cAttrs[name]
		switch {
		case !c.IsNull() && r.computedOnly:
			return nil, false // terraform refuses such a configuration; the framework words it
		case !c.IsNull():
			planned[name] = pAttrs[name]
		case r.def != nil:
			planned[name] = *r.def
		case r.computed:
			planned[name] = tftypes.NewValue(ty, tftypes.UnknownValue)
		default:
			planned[name] = pAttrs[name]
		}
	}
	if tftypes.ValidateValue(full, planned) != nil {
		return nil, false
	}
	schema := runResourceSchema()
	mReq := resource.ModifyPlanRequest{
		ClientCapabilities: resource.ModifyPlanClientCapabilities{DeferralAllowed: req.ClientCapabilities != nil && req.ClientCapabilities.DeferralAllowed},
		Config:             tfsdk.Config{Schema: schema, Raw: config},
		Plan:               tfsdk.Plan{Schema: schema, Raw: tftypes.NewValue(full, planned)},
		State:              tfsdk.State{Schema: schema, Raw: prior},
	}
	mResp := resource.ModifyPlanResponse{Plan: mReq.Plan, RequiresReplace: path.Paths{}}
	(&ExperimentRunResource{eng: eng}).ModifyPlan(ctx, mReq, &mResp)
	if len(mResp.Diagnostics) != 0 || len(mResp.RequiresReplace) != 0 || mResp.Deferred != nil {
		return nil, false
	}
	dv, err := tfprotov6.NewDynamicValue(full, mResp.Plan.Raw)
	if err != nil {
		return nil, false
	}
	return &tfprotov6.PlanResourceChangeResponse{PlannedState: &dv}, true
}

// createRule is what a create plan makes of a top-level attribute that the
// configuration leaves null: its default (def), unknown (computed without a
// default), or null. computedOnly: the configuration cannot set it.
type createRule struct {
	def                    *tftypes.Value
	computed, computedOnly bool
}

// runCreateRules reads aml_experiment_run's schema once for createRunPlan.
// False (every create plan goes to the framework) when the schema has
// something createRunPlan does not model: a default that is not a static
// value, a write-only attribute, or a nested attribute or block with a
// computed attribute inside (the framework would default or unknown it
// within a configured object).
var runCreateRules = sync.OnceValues(func() (map[string]createRule, bool) {
	ctx := context.Background()
	s := runResourceSchema()
	rules := make(map[string]createRule, len(s.Attributes))
	for name, a := range s.Attributes {
		if a.IsWriteOnly() || !plainNested(a) {
			return nil, false
		}
		r := createRule{computed: a.IsComputed(), computedOnly: a.IsComputed() && !a.IsOptional() && !a.IsRequired()}
		var dv attr.Value
		switch a := a.(type) {
		case schema.StringAttribute:
			if a.Default != nil {
				var resp defaults.StringResponse
				a.Default.DefaultString(ctx, defaults.StringRequest{}, &resp)
				if resp.Diagnostics.HasError() {
					return nil, false
				}
				dv = resp.PlanValue
			}
		case schema.BoolAttribute:
			if a.Default != nil {
				var resp defaults.BoolResponse
				a.Default.DefaultBool(ctx, defaults.BoolRequest{}, &resp)
				if resp.Diagnostics.HasError() {
					return nil, false
				}
				dv = resp.PlanValue
			}
		default:
			// Any other kind with a Default field set is not modelled.
			if f := reflect.ValueOf(a).FieldByName("Default"); f.IsValid() && !f.IsNil() {
				return nil, false
			}
		}
		if dv != nil {
			tv, err := dv.ToTerraformValue(ctx)
			if err != nil {
				return nil, false
			}
			r.def = &tv
		}
		rules[name] = r
	}
	for _, b := range s.Blocks {
		if !plainNested(b) {
			return nil, false
		}
	}
	return rules, true
})

// plainNested reports whether an attribute or block has no computed attribute
// nested inside it (so nothing in it gets a default or an unknown).
func plainNested(x any) bool {
	attrs, blocks, ok := schemaChildren(x)
	if !ok {
		return false
	}
	for _, a := range attrs {
		if a.IsComputed() || a.IsWriteOnly() || !plainNested(a) {
			return false
		}
	}
	for _, b := range blocks {
		if !plainNested(b) {
			return false
		}
	}
	return true
}

// schemaChildren is what is nested in an attribute or block of a resource
// schema: the attributes and blocks of its object (none for a flat
// attribute); false for a kind it does not know.
func schemaChildren(x any) (map[string]schema.Attribute, map[string]schema.Block, bool) {
	switch x := x.(type) {
	case schema.SingleNestedAttribute:
		return x.Attributes, nil, true
	case schema.ListNestedAttribute:
		return x.NestedObject.Attributes, nil, true
	case schema.SetNestedAttribute:
		return x.NestedObject.Attributes, nil, true
	case schema.MapNestedAttribute:
		return x.NestedObject.Attributes, nil, true
	case schema.SingleNestedBlock:
		return x.Attributes, x.Blocks, true
	case schema.ListNestedBlock:
		return x.NestedObject.Attributes, x.NestedObject.Blocks, true
	case schema.SetNestedBlock:
		return x.NestedObject.Attributes, x.NestedObject.Blocks, true
	case schema.Attribute:
		return nil, nil, true // not nested
	}
	return nil, nil, false
}

// UpgradeResourceState of an aml_experiment_run state already at the schema's
// version is the framework's passthrough (decode the JSON state with the
// schema's type, unknown attributes ignored; encode it back), with the type
// built once per process instead of on every request (terraform asks for every
// run of every plan). Any other version, and any state that does not decode,
// goes to the framework, which upgrades it or words the error.
func (s *fastServer) UpgradeResourceState(ctx context.Context, req *tfprotov6.UpgradeResourceStateRequest) (*tfprotov6.UpgradeResourceStateResponse, error) {
	if ty, version := runSchema(); req.TypeName == experimentRunType && req.RawState != nil && req.Version == version {
		val, err := req.RawState.UnmarshalWithOpts(ty, tfprotov6.UnmarshalOpts{
			ValueFromJSONOpts: tftypes.ValueFromJSONOpts{IgnoreUndefinedAttributes: true},
		})
		if err == nil {
			if dv, err := tfprotov6.NewDynamicValue(ty, val); err == nil {
				fastUpgrades.Add(1)
				return &tfprotov6.UpgradeResourceStateResponse{UpgradedState: &dv}, nil
			}
		}
	}
	return s.ProviderServer.UpgradeResourceState(ctx, req)
}

// ReadResource keeps an aml_experiment_run's state as it is, without the
// framework, when the run's record is the one the state was written from: the
// fingerprint of what ReadRun returns equals the one Read or Create kept in
// private state beside it. Anything else goes to the framework's Read.
func (s *fastServer) ReadResource(ctx context.Context, req *tfprotov6.ReadResourceRequest) (*tfprotov6.ReadResourceResponse, error) {
	if req.TypeName == experimentRunType {
		if eng := s.p.eng.Load(); eng != nil && unchangedRunRecord(ctx, eng, req) {
			fastReads.Add(1)
			return &tfprotov6.ReadResourceResponse{NewState: req.CurrentState, Private: req.Private}, nil
		}
	}
	return s.ProviderServer.ReadResource(ctx, req)
}

func unchangedRunRecord(ctx context.Context, eng *engine.Engine, req *tfprotov6.ReadResourceRequest) bool {
	if req.CurrentState == nil || len(req.Private) == 0 {
		return false
	}
	// The framework's private state: a JSON object of base64 values.
	var private map[string][]byte
	if err := json.Unmarshal(req.Private, &private); err != nil || len(private[privateRunKey]) == 0 {
		return false
	}
	state, err := req.CurrentState.Unmarshal(runStateType())
	if err != nil || state.IsNull() {
		return false
	}
	var attrs map[string]tftypes.Value
	var id *string
	if state.As(&attrs) != nil || attrs["id"].As(&id) != nil || id == nil {
		return false
	}
	run, err := eng.ReadRun(ctx, *id)
	if err != nil || run.OutputsGone {
		return false
	}
	fp := runFingerprint(run)
	return fp != nil && bytes.Equal(fp, private[privateRunKey])
}

// unchangedRunPlan reports whether the plan of this run is "no change": the
// configuration is the state's, and checkRunPlan, as ModifyPlan would call it,
// succeeds with the snapshot recorded in state.
func unchangedRunPlan(ctx context.Context, eng *engine.Engine, req *tfprotov6.PlanResourceChangeRequest) bool {
	if req.PriorState == nil || req.ProposedNewState == nil {
		return false
	}
	ty := runStateType()
	prior, err := req.PriorState.Unmarshal(ty)
	if err != nil || prior.IsNull() || !prior.IsFullyKnown() {
		return false
	}
	proposed, err := req.ProposedNewState.Unmarshal(ty)
	if err != nil || !prior.Equal(proposed) {
		return false
	}
	var attrs map[string]tftypes.Value
	if err := prior.As(&attrs); err != nil {
		return false
	}
	str := func(name string) (string, bool) {
		var p *string
		if err := attrs[name].As(&p); err != nil || p == nil {
			return "", false
		}
		return *p, true
	}
	list := func(name string) ([]string, bool) {
		if attrs[name].IsNull() {
			return nil, true
		}
		var vs []tftypes.Value
		if err := attrs[name].As(&vs); err != nil {
			return nil, false
		}
		out := make([]string, 0, len(vs))
		for _, v := range vs {
			var e string
			if err := v.As(&e); err != nil {
				return nil, false
			}
			out = append(out, e)
		}
		return out, true
	}
	// A value the framework path would rewrite: leave it to the framework.
	if v, ok := attrs["snapshot_changes"]; !ok || v.IsNull() {
		return false
	}
	in := runPlanInputs{ProgramKnown: true, PlacementKnown: true}
	var ok bool
	if in.SourceDir, ok = str("source_directory"); !ok {
		return false
	}
	in.Script, in.ScriptSet = str("script")
	if in.Command, ok = list("command"); !ok {
		return false
	}
	if in.Arguments, ok = list("arguments"); !ok {
		return false
	}
	var env map[string]tftypes.Value
	if err := attrs["environment_variables"].As(&env); err != nil {
		return false
	}
	if env != nil {
		in.Env = make(map[string]string, len(env))
		for k, v := range env {
			var e string
			if err := v.As(&e); err != nil {
				return false
			}
			in.Env[k] = e
		}
	}
	for name, dst := range map[string]*string{"workspace_id": &in.WorkspaceID, "compute_target": &in.ComputeTarget, "run_configuration_id": &in.RunConfigID} {
		if *dst, ok = str(name); !ok {
			return false
		}
	}
	hash, ok := str("snapshot_hash")
	if !ok {
		return false
	}
	var files, size *big.Float
	if attrs["snapshot_files"].As(&files) != nil || attrs["snapshot_bytes"].As(&size) != nil || files == nil || size == nil {
		return false
	}
	sum, _, _, err := checkRunPlan(ctx, eng, in)
	if err != nil {
		return false
	}
	return sum.Hash == hash && files.Cmp(new(big.Float).SetInt64(int64(sum.Files))) == 0 && size.Cmp(new(big.Float).SetInt64(sum.Bytes)) == 0
}

// engineHolder keeps the engine the provider configured, for the fast path.
type engineHolder = atomic.Pointer[engine.Engine]

// ValidateResourceConfig of an aml_experiment_run is the framework's, run by a
// second framework server whose aml_experiment_run schema has only the
// attributes a configuration can set (runConfigSchema): the same validators,
// ValidateConfig and diagnostics, without walking the 28 results. The
// framework's validation walks the schema's top-level attributes once per
// attribute (each value lookup copies the attribute map), so its cost grows
// with their square; terraform asks for it for every run of every plan. A
// configuration that sets a result (which terraform refuses before asking) or
// does not decode goes to the full schema.
func (s *fastServer) ValidateResourceConfig(ctx context.Context, req *tfprotov6.ValidateResourceConfigRequest) (*tfprotov6.ValidateResourceConfigResponse, error) {
	if req.TypeName == experimentRunType && req.Config != nil {
		if cfg, ok := settableOnly(req.Config); ok {
			fastValidations.Add(1)
			return runSettableServer().ValidateResourceConfig(ctx, &tfprotov6.ValidateResourceConfigRequest{
				TypeName: req.TypeName, Config: cfg, ClientCapabilities: req.ClientCapabilities,
			})
		}
	}
	return s.ProviderServer.ValidateResourceConfig(ctx, req)
}

// settableRunResource is aml_experiment_run with its computed-only attributes
// left out of the schema, for validating configurations (its server is never
// asked to plan or apply).
type settableRunResource struct{ ExperimentRunResource }

func (r *settableRunResource) Schema(ctx context.Context, req resource.SchemaRequest, resp *resource.SchemaResponse) {
	r.ExperimentRunResource.Schema(ctx, req, resp)
	for name, a := range resp.Schema.Attributes {
		if a.IsComputed() && !a.IsOptional() && !a.IsRequired() {
			delete(resp.Schema.Attributes, name)
		}
	}
}

// validationProvider serves settableRunResource alone, with AmlProvider's
// name and provider schema; it is never configured.
type validationProvider struct{ AmlProvider }

func (p *validationProvider) Resources(context.Context) []func() resource.Resource {
	return []func() resource.Resource{func() resource.Resource { return &settableRunResource{} }}
}

func (p *validationProvider) DataSources(context.Context) []func() datasource.DataSource { return nil }

var runSettableServer = sync.OnceValue(func() tfprotov6.ProviderServer {
	return providerserver.NewProtocol6(&validationProvider{})()
})

// runConfigSchema is settableRunResource's type and the attributes it leaves out.
var runConfigSchema = sync.OnceValues(func() (tftypes.Object, map[string]bool) {
	ctx := context.Background()
	var resp resource.SchemaResponse
	(&settableRunResource{}).Schema(ctx, resource.SchemaRequest{}, &resp)
	ty, _ := resp.Schema.Type().TerraformType(ctx).(tftypes.Object)
	left := map[string]bool{}
	for name := range runStateType().(tftypes.Object).AttributeTypes {
		if _, ok := ty.AttributeTypes[name]; !ok {
			left[name] = true
		}
	}
	return ty, left
})

// settableOnly re-encodes a run's configuration with runConfigSchema's type;
// false when it sets a computed-only attribute or does not decode.
func settableOnly(config *tfprotov6.DynamicValue) (*tfprotov6.DynamicValue, bool) {
	val, err := config.Unmarshal(runStateType())
	if err != nil || !val.IsKnown() || val.IsNull() {
		return nil, false
	}
	ty, left := runConfigSchema()
	var attrs map[string]tftypes.Value
	if err := val.As(&attrs); err != nil {
		return nil, false
	}
	kept := make(map[string]tftypes.Value, len(ty.AttributeTypes))
	for name, v := range attrs {
		if left[name] {
			if !v.IsNull() {
				return nil, false
			}
			continue
		}
		kept[name] = v
	}
	if tftypes.ValidateValue(ty, kept) != nil {
		return nil, false
	}
	dv, err := tfprotov6.NewDynamicValue(ty, tftypes.NewValue(ty, kept))
	if err != nil {
		return nil, false
	}
	return &dv, true
}
