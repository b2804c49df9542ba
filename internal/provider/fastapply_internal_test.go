package provider

import (
	"context"
	"encoding/json"
	"fmt"
	"reflect"
	"sort"
	"strings"
	"testing"

	"github.com/hashicorp/terraform-plugin-framework/attr"
	"github.com/hashicorp/terraform-plugin-framework/diag"
	"github.com/hashicorp/terraform-plugin-framework/path"
	"github.com/hashicorp/terraform-plugin-framework/resource/schema"
	"github.com/hashicorp/terraform-plugin-framework/types"
	"github.com/hashicorp/terraform-plugin-framework/types/basetypes"
	"github.com/hashicorp/terraform-plugin-go/tfprotov6"
	"github.com/hashicorp/terraform-plugin-go/tftypes"
)

// TestFastCreateApplyMatchesFramework applies the same plan of a new run
// twice, once through createRunApply and once through the framework, with
// real runs, and compares what Terraform gets back: the new state (the
// values that name the run itself masked), the private state's keys, and the
// diagnostics (run ids masked). The fast path's private state must also let
// the next refresh keep the state as it is.
func TestFastCreateApplyMatchesFramework(t *testing.T) {
	f := newFastFixture(t)
	ctx := context.Background()
	full := runStateType().(tftypes.Object)
	base := map[string]tftypes.Value{
		"workspace_id": tfString(f.ws), "experiment_name": tfString("apply"), "source_directory": tfString(f.src),
		"script": tfString("train.py"), "run_configuration_id": tfString(f.rc),
	}
	with := func(changes map[string]tftypes.Value) tftypes.Value { return runConfigWith(full, base, changes) }
	yes := tftypes.NewValue(tftypes.Bool, true)
	cases := []struct {
		name   string
		cfg    tftypes.Value
		errors int // error diagnostics expected
		keeps  bool
	}{
		{"completes", with(nil), 0, true},
		{"logs metrics", with(map[string]tftypes.Value{"script": tfString("metrics.py"), "arguments": tfStrings("--lr", "0.1")}), 0, true},
		{"fails", with(map[string]tftypes.Value{"script": tfString("fail.py")}), 1, true},
		{"fails, allowed", with(map[string]tftypes.Value{"script": tfString("fail.py"), "allow_failure": yes}), 0, true},
		// Refused at submit: no run, no state.
		{"no such run configuration", with(map[string]tftypes.Value{"run_configuration_id": tfString(f.ws + "/runconfigs/nope")}), 1, false},
	}
	null, err := tfprotov6.NewDynamicValue(full, tftypes.NewValue(full, nil))
	if err != nil {
		t.Fatal(err)
	}
	// Attributes that name the run itself, or time it.
	volatile := map[string]bool{"id": true, "run_id": true, "start_time": true, "end_time": true, "duration_seconds": true,
		"log_path": true, "logs_uri": true, "outputs_path": true, "outputs_uri": true}
	type answer struct {
		state   map[string]string
		private []string
		diags   []string
	}
	apply := func(s tfprotov6.ProviderServer, cfg, planned *tfprotov6.DynamicValue) (answer, *tfprotov6.ApplyResourceChangeResponse) {
		t.Helper()
		resp, err := s.ApplyResourceChange(ctx, &tfprotov6.ApplyResourceChangeRequest{
			TypeName: experimentRunType, PriorState: &null, PlannedState: planned, Config: cfg,
		})
		if err != nil {
			t.Fatal(err)
		}
		var a answer
		runID := ""
		if resp.NewState != nil {
			st, err := resp.NewState.Unmarshal(full)
			if err != nil {
				t.Fatal(err)
			}
			a.state = map[string]string{}
			if st.IsNull() {
				a.state["(state)"] = "null"
			} else {
				var attrs map[string]tftypes.Value
				if err := st.As(&attrs); err != nil {
					t.Fatal(err)
				}
				for name, v := range attrs {
					a.state[name] = v.String()
					if volatile[name] && v.IsKnown() && !v.IsNull() {
						a.state[name] = "(set)"
					}
				}
				_ = attrs["run_id"].As(&runID)
			}
		}
		if len(resp.Private) > 0 {
			var p map[string][]byte
			if err := json.Unmarshal(resp.Private, &p); err != nil {
				t.Fatalf("private state %q: %v", resp.Private, err)
			}
			for k := range p {
				a.private = append(a.private, k)
			}
			sort.Strings(a.private)
		}
		for _, d := range resp.Diagnostics {
			text := fmt.Sprintf("%v %v: %s | %s", d.Severity, d.Attribute, d.Summary, d.Detail)
			if runID != "" {
				text = strings.ReplaceAll(text, runID, "RUN")
			}
			a.diags = append(a.diags, text)
		}
		return a, resp
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			cfg, err := tfprotov6.NewDynamicValue(full, c.cfg)
			if err != nil {
				t.Fatal(err)
			}
			proposed := cfg
			plan, err := f.srv.ProviderServer.PlanResourceChange(ctx, &tfprotov6.PlanResourceChangeRequest{
				TypeName: experimentRunType, PriorState: &null, ProposedNewState: &proposed, Config: &cfg,
			})
			if err != nil || len(plan.Diagnostics) > 0 {
				t.Fatalf("plan: %v %v", err, plan.Diagnostics)
			}
			before := fastApplies.Load()
			fast, fastResp := apply(f.srv, &cfg, plan.PlannedState)
			if fastApplies.Load() == before {
				t.Fatal("the create did not take the fast path")
			}
			framework, _ := apply(f.srv.ProviderServer, &cfg, plan.PlannedState)
			if !reflect.DeepEqual(fast, framework) {
				t.Errorf("applies differ\nfast:      %v\n  private %q diags %q\nframework: %v\n  private %q diags %q",
					fast.state, fast.private, fast.diags, framework.state, framework.private, framework.diags)
			}
			if c.name == "logs metrics" && fast.state["metrics"] != `tftypes.Map[tftypes.Number]<"acc":tftypes.Number<"0.9">>` {
				t.Errorf("metrics = %s, want acc = 0.9", fast.state["metrics"])
			}
			errs := 0
			for _, d := range fastResp.Diagnostics {
				if d.Severity == tfprotov6.DiagnosticSeverityError {
					errs++
				}
			}
			if errs != c.errors {
				t.Errorf("%d error diagnostics, want %d: %q", errs, c.errors, fast.diags)
			}
			if !c.keeps {
				return
			}
			// The next refresh keeps the state as it is (the fingerprint the
			// fast path kept is the one the fast read checks).
			reads := fastReads.Load()
			read, err := f.srv.ReadResource(ctx, &tfprotov6.ReadResourceRequest{
				TypeName: experimentRunType, CurrentState: fastResp.NewState, Private: fastResp.Private,
			})
			if err != nil || len(read.Diagnostics) > 0 {
				t.Fatalf("read: %v %v", err, read.Diagnostics)
			}
			if fastReads.Load() == reads {
				t.Error("the refresh after a fast create did not keep the state: its private state has no usable fingerprint")
			}
		})
	}
}

// TestProtoDiagnosticsMatchFramework: protoDiagnostics words diagnostics as
// the framework's conversion does, attribute paths included (compared with
// what the framework's own server returns for them through a resource's
// ValidateConfig is not possible here, so with the protocol's paths spelled
// out).
func TestProtoDiagnosticsMatchFramework(t *testing.T) {
	var diags diag.Diagnostics
	diags.AddError("E", "e detail")
	diags.AddWarning("W", "w detail")
	diags.AddAttributeError(path.Root("environment").AtName("python").AtName("interpreter_path"), "P", "p detail")
	diags.AddAttributeWarning(path.Root("arguments").AtListIndex(2), "L", "l detail")
	diags.AddAttributeError(path.Root("tags").AtMapKey("team"), "M", "m detail")
	diags.AddAttributeError(path.Root("set").AtSetValue(types.StringValue("x")), "S", "s detail")
	got := protoDiagnostics(diags)
	want := []*tfprotov6.Diagnostic{
		{Severity: tfprotov6.DiagnosticSeverityError, Summary: "E", Detail: "e detail"},
		{Severity: tfprotov6.DiagnosticSeverityWarning, Summary: "W", Detail: "w detail"},
		{Severity: tfprotov6.DiagnosticSeverityError, Summary: "P", Detail: "p detail",
			Attribute: tftypes.NewAttributePath().WithAttributeName("environment").WithAttributeName("python").WithAttributeName("interpreter_path")},
		{Severity: tfprotov6.DiagnosticSeverityWarning, Summary: "L", Detail: "l detail",
			Attribute: tftypes.NewAttributePath().WithAttributeName("arguments").WithElementKeyInt(2)},
		{Severity: tfprotov6.DiagnosticSeverityError, Summary: "M", Detail: "m detail",
			Attribute: tftypes.NewAttributePath().WithAttributeName("tags").WithElementKeyString("team")},
		{Severity: tfprotov6.DiagnosticSeverityError, Summary: "S", Detail: "s detail",
			Attribute: tftypes.NewAttributePath().WithAttributeName("set").WithElementKeyValue(tftypes.NewValue(tftypes.String, "x"))},
	}
	if len(got) != len(want) {
		t.Fatalf("%d diagnostics, want %d: %v", len(got), len(want), got)
	}
	for i := range want {
		g, w := got[i], want[i]
		if g.Severity != w.Severity || g.Summary != w.Summary || g.Detail != w.Detail || !g.Attribute.Equal(w.Attribute) {
			t.Errorf("diagnostic %d: %+v (path %v), want %+v (path %v)", i, g, g.Attribute, w, w.Attribute)
		}
	}
}

// TestRunApplyRules: aml_experiment_run's schema has none of what
// createRunApply cannot leave out, its attributes with semantic equality are
// results (unknown in every create plan), and the check sees each case.
func TestRunApplyRules(t *testing.T) {
	semantic, ok := runApplyRules()
	if !ok {
		t.Fatal("runApplyRules refuses aml_experiment_run's schema: every create would go to the framework")
	}
	want := map[string]bool{"duration_seconds": true, "environment_build_seconds": true, "metrics": true}
	if !reflect.DeepEqual(semantic, want) {
		t.Errorf("attributes with semantic equality: %v, want %v", semantic, want)
	}
	_, left := runConfigSchema()
	for name := range semantic {
		if !left[name] {
			t.Errorf("%s has semantic equality and a configuration can set it: its plan can have a value", name)
		}
	}
	for _, c := range []struct {
		name           string
		x              any
		plain, semantc bool
	}{
		{"string", schema.StringAttribute{Optional: true}, true, false},
		{"list of strings", schema.ListAttribute{ElementType: types.StringType, Optional: true}, true, false},
		{"float64", schema.Float64Attribute{Computed: true}, true, true},
		{"single nested block", schema.SingleNestedBlock{Attributes: map[string]schema.Attribute{"a": schema.StringAttribute{Optional: true}}}, true, false},
		{"float64 inside a block", schema.SingleNestedBlock{Attributes: map[string]schema.Attribute{"a": schema.Float64Attribute{Optional: true}}}, true, true},
		{"list block", schema.ListNestedBlock{}, false, false},
		{"write-only", schema.StringAttribute{Optional: true, WriteOnly: true}, false, false},
		{"write-only inside a block", schema.SingleNestedBlock{Attributes: map[string]schema.Attribute{"a": schema.StringAttribute{Optional: true, WriteOnly: true}}}, false, false},
		{"custom type with semantic equality", schema.StringAttribute{Optional: true, CustomType: semanticStringType{}}, true, true},
		{"elements with semantic equality", schema.ListAttribute{ElementType: semanticStringType{}, Optional: true}, true, true},
	} {
		if plain, sem := applyShape(c.x); plain != c.plain || (plain && sem != c.semantc) {
			t.Errorf("applyShape(%s) = %v, %v; want %v, %v", c.name, plain, sem, c.plain, c.semantc)
		}
	}
}

// semanticStringType is a string type whose values have semantic equality.
type semanticStringType struct{ basetypes.StringType }

func (semanticStringType) ValueType(context.Context) attr.Value { return semanticString{} }

type semanticString struct{ basetypes.StringValue }

func (semanticString) StringSemanticEquals(context.Context, basetypes.StringValuable) (bool, diag.Diagnostics) {
	return true, nil
}
