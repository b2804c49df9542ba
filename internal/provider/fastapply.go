package provider

import (
	"context"
	"encoding/json"
	"reflect"
	"strings"
	"sync"
	"sync/atomic"
	"unicode/utf8"

	"github.com/hashicorp/terraform-plugin-framework/attr"
	"github.com/hashicorp/terraform-plugin-framework/diag"
	"github.com/hashicorp/terraform-plugin-framework/path"
	"github.com/hashicorp/terraform-plugin-framework/resource"
	"github.com/hashicorp/terraform-plugin-framework/resource/schema"
	"github.com/hashicorp/terraform-plugin-framework/tfsdk"
	"github.com/hashicorp/terraform-plugin-go/tfprotov6"
	"github.com/hashicorp/terraform-plugin-go/tftypes"

	"github.com/openaml/terraform-provider-aml/internal/engine"
)

// fastApplies counts the creates the apply fast path answered (for the tests).
var fastApplies atomic.Int64

// ApplyResourceChange of a new aml_experiment_run (createRunApply) calls the
// resource's Create without the framework's conversions around it; every
// other apply (update, delete, other resources) is the framework's.
func (s *fastServer) ApplyResourceChange(ctx context.Context, req *tfprotov6.ApplyResourceChangeRequest) (*tfprotov6.ApplyResourceChangeResponse, error) {
	if req.TypeName == experimentRunType {
		if eng := s.p.eng.Load(); eng != nil {
			if resp, ok := createRunApply(ctx, eng, req); ok {
				fastApplies.Add(1)
				return resp, nil
			}
		}
	}
	return s.ProviderServer.ApplyResourceChange(ctx, req)
}

// createRunApply is the framework's create of an aml_experiment_run, step for
// step, for a schema where its steps around Create do nothing: the planned
// state and configuration decoded with the schema's type, Create called with
// them, and its state, private state and diagnostics encoded as the framework
// encodes them. What it leaves out, and why that is nothing here:
//
//   - NullifyCollectionBlocks and ReifyNullCollectionBlocks: the schema has
//     no list or set blocks;
//   - semantic equality of the new state with the plan: it compares only
//     values the plan has, and the attributes whose types have it are
//     unknown (or null) in the plan;
//   - NullifyWriteOnlyAttributes: no attribute is write-only;
//   - resource identity: the resource has none.
//
// Each of these walks the 43 attributes of every run's state, with a path
// lookup per attribute. Requests it does not model (not a create, a planned
// identity, a value that does not decode) go to the framework, before
// anything ran. runApplyRules reads the schema for this once;
// TestFastCreateApplyMatchesFramework holds the two paths to the same answers.
func createRunApply(ctx context.Context, eng *engine.Engine, req *tfprotov6.ApplyResourceChangeRequest) (*tfprotov6.ApplyResourceChangeResponse, bool) {
	semantic, ok := runApplyRules()
	if !ok || req.PriorState == nil || req.PlannedState == nil || req.Config == nil || req.PlannedIdentity != nil {
		return nil, false
	}
	full := runStateType()
	prior, err := req.PriorState.Unmarshal(full)
	if err != nil || !prior.IsNull() {
		return nil, false
	}
	planned, err := req.PlannedState.Unmarshal(full)
	var attrs map[string]tftypes.Value
	if err != nil || planned.IsNull() || planned.As(&attrs) != nil {
		return nil, false
	}
	for name := range semantic {
		if v := attrs[name]; v.IsKnown() && !v.IsNull() {
			return nil, false // the framework would compare it with the new state
		}
	}
	config, err := req.Config.Unmarshal(full)
	if err != nil {
		return nil, false
	}
	schema := runResourceSchema()
	null := tftypes.NewValue(full, nil)
	cReq := resource.CreateRequest{
		Config: tfsdk.Config{Schema: schema, Raw: config},
		Plan:   tfsdk.Plan{Schema: schema, Raw: planned},
	}
	cResp := resource.CreateResponse{State: tfsdk.State{Schema: schema, Raw: null}}
	var private providerPrivate
	(&ExperimentRunResource{eng: eng}).create(ctx, cReq, &cResp, &private)
	diags := cResp.Diagnostics
	if !diags.HasError() && cResp.State.Raw.Equal(null) {
		diags.AddError("Missing Resource State After Create",
			"The Terraform Provider unexpectedly returned no resource state after having no errors in the resource creation. "+
				"This is always an issue in the Terraform Provider and should be reported to the provider developers.\n\n"+
				"The resource may have been successfully created, but Terraform is not tracking it. "+
				"Applying the configuration again with no other action may result in duplicate resource errors. "+
				"Import the resource if the resource was actually created and Terraform should be tracking it.")
	}
	resp := &tfprotov6.ApplyResourceChangeResponse{Diagnostics: protoDiagnostics(diags)}
	if state, err := tfprotov6.NewDynamicValue(full, cResp.State.Raw); err == nil {
		resp.NewState = &state
	} else {
		resp.Diagnostics = append(resp.Diagnostics, &tfprotov6.Diagnostic{
			Severity: tfprotov6.DiagnosticSeverityError, Summary: "Unable to Convert State",
			Detail: "An unexpected error was encountered when converting the state to the protocol type. " +
				"This is always an issue in terraform-plugin-framework used to implement the provider and should be reported to the provider developers.\n\n" +
				"Please report this to the provider developer:\n\n" + err.Error(),
		})
	}
	if len(private) > 0 {
		b, err := json.Marshal(map[string][]byte(private))
		if err != nil {
			resp.Diagnostics = append(resp.Diagnostics, &tfprotov6.Diagnostic{
				Severity: tfprotov6.DiagnosticSeverityError, Summary: "Error Encoding Private State", Detail: err.Error(),
			})
		}
		resp.Private = b
	}
	return resp, true
}

// providerPrivate is the provider's part of the private state, as the
// framework's ProviderData keeps it: JSON values by key. The framework's
// encoding is this map as JSON (values base64), which unchangedRunRecord reads.
type providerPrivate map[string][]byte

func (p *providerPrivate) SetKey(ctx context.Context, key string, value []byte) diag.Diagnostics {
	var diags diag.Diagnostics
	switch {
	case key == "" || strings.HasPrefix(key, "."):
		diags.AddError("Restricted Resource Private State Namespace",
			"Using a period ('.') as a prefix for a key used in private state is not allowed.\n\n"+
				`The key "`+key+`" is invalid. Please check the key you are supplying does not use a a period ('.') as a prefix.`)
	case len(value) == 0:
		delete(*p, key)
	case !utf8.Valid(value):
		diags.AddError("UTF-8 Invalid", "Values stored in private state must be valid UTF-8.\n\n"+
			`The value being supplied for key "`+key+`" is invalid. Please verify that the value is valid UTF-8.`)
	case !json.Valid(value):
		diags.AddError("JSON Invalid", "Values stored in private state must be valid JSON.\n\n"+
			`The value being supplied for key "`+key+`" is invalid. Please verify that the value is valid JSON.`)
	default:
		if *p == nil {
			*p = providerPrivate{}
		}
		(*p)[key] = value
	}
	return diags
}

// protoDiagnostics is the framework's conversion of diagnostics to the
// protocol's (toproto6.Diagnostics), attribute paths included.
func protoDiagnostics(diags diag.Diagnostics) []*tfprotov6.Diagnostic {
	var out []*tfprotov6.Diagnostic
	for _, d := range diags {
		pd := &tfprotov6.Diagnostic{Summary: d.Summary(), Detail: d.Detail(), Severity: tfprotov6.DiagnosticSeverityInvalid}
		switch d.Severity() {
		case diag.SeverityError:
			pd.Severity = tfprotov6.DiagnosticSeverityError
		case diag.SeverityWarning:
			pd.Severity = tfprotov6.DiagnosticSeverityWarning
		}
		if wp, ok := d.(diag.DiagnosticWithPath); ok {
			ap, ok := protoPath(wp.Path())
			if !ok {
				out = append(out, &tfprotov6.Diagnostic{Severity: tfprotov6.DiagnosticSeverityError, Summary: "Unable to Convert Attribute Path",
					Detail: "An unexpected error occurred while trying to convert an attribute path. Attribute Path: " + wp.Path().String()})
			}
			pd.Attribute = ap
		}
		out = append(out, pd)
	}
	return out
}

// protoPath converts a framework path to the protocol's (totftypes.AttributePath).
func protoPath(p path.Path) (*tftypes.AttributePath, bool) {
	var steps []tftypes.AttributePathStep
	for _, step := range p.Steps() {
		switch s := step.(type) {
		case path.PathStepAttributeName:
			steps = append(steps, tftypes.AttributeName(s))
		case path.PathStepElementKeyInt:
			steps = append(steps, tftypes.ElementKeyInt(s))
		case path.PathStepElementKeyString:
			steps = append(steps, tftypes.ElementKeyString(s))
		case path.PathStepElementKeyValue:
			v, err := s.Value.ToTerraformValue(context.Background())
			if err != nil {
				return nil, false
			}
			steps = append(steps, tftypes.ElementKeyValue(v))
		default:
			return nil, false
		}
	}
	return tftypes.NewAttributePathWithSteps(steps), true
}

// runApplyRules reads aml_experiment_run's schema once for createRunApply:
// false when the framework's steps around Create that it leaves out could do
// something (a list or set block, a write-only attribute, at any depth); else
// the top-level attributes and blocks with a type that has semantic equality
// inside (a value type with a ...SemanticEquals method, as Float64Value has).
// The framework compares those with the plan only where the plan has a value,
// so createRunApply takes a create only when each of them is unknown or null
// in its plan (the results are, in every create plan).
var runApplyRules = sync.OnceValues(func() (map[string]bool, bool) {
	s := runResourceSchema()
	semantic := map[string]bool{}
	for name, a := range s.Attributes {
		plain, sem := applyShape(a)
		if !plain {
			return nil, false
		}
		if sem {
			semantic[name] = true
		}
	}
	for name, b := range s.Blocks {
		plain, sem := applyShape(b)
		if !plain {
			return nil, false
		}
		if sem {
			semantic[name] = true
		}
	}
	return semantic, true
})

// applyShape reports whether an attribute or block is plain for
// createRunApply (no write-only attribute, no list or set block), and whether
// a type inside it has semantic equality.
func applyShape(x any) (plain, semantic bool) {
	switch x.(type) {
	case schema.ListNestedBlock, schema.SetNestedBlock:
		return false, false
	}
	if a, ok := x.(schema.Attribute); ok {
		if a.IsWriteOnly() {
			return false, false
		}
		ctx := context.Background()
		t := a.GetType()
		semantic = hasSemanticEquality(t.ValueType(ctx))
		if et, ok := t.(attr.TypeWithElementType); ok && hasSemanticEquality(et.ElementType().ValueType(ctx)) {
			semantic = true
		}
	}
	attrs, blocks, ok := schemaChildren(x)
	if !ok {
		return false, false
	}
	for _, a := range attrs {
		p, sem := applyShape(a)
		if !p {
			return false, false
		}
		semantic = semantic || sem
	}
	for _, b := range blocks {
		p, sem := applyShape(b)
		if !p {
			return false, false
		}
		semantic = semantic || sem
	}
	return true, semantic
}

func hasSemanticEquality(v any) bool {
	t := reflect.TypeOf(v)
	if t == nil {
		return true
	}
	for i := 0; i < t.NumMethod(); i++ {
		if strings.HasSuffix(t.Method(i).Name, "SemanticEquals") {
			return true
		}
	}
	return false
}
