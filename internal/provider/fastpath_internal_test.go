package provider

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"sort"
	"strings"
	"testing"

	"github.com/hashicorp/terraform-plugin-framework/attr"
	"github.com/hashicorp/terraform-plugin-framework/diag"
	"github.com/hashicorp/terraform-plugin-framework/path"
	"github.com/hashicorp/terraform-plugin-framework/resource"
	"github.com/hashicorp/terraform-plugin-framework/resource/schema"
	"github.com/hashicorp/terraform-plugin-framework/resource/schema/stringdefault"
	"github.com/hashicorp/terraform-plugin-framework/tfsdk"
	"github.com/hashicorp/terraform-plugin-framework/types"
	"github.com/hashicorp/terraform-plugin-go/tfprotov6"
	"github.com/hashicorp/terraform-plugin-go/tftypes"

	"github.com/openaml/terraform-provider-aml/internal/engine"
	"github.com/openaml/terraform-provider-aml/internal/engine/env"
)

// TestFastUpgradeMatchesFramework: the fast path's upgrade of a run state at
// the current version gives exactly the framework's passthrough result (an
// attribute the schema no longer has is dropped by both); an older version
// and a state that does not decode are left to the framework.
func TestFastUpgradeMatchesFramework(t *testing.T) {
	ctx := context.Background()
	srv := NewProtocol6Server("test")().(*fastServer)
	framework := srv.ProviderServer
	if _, err := framework.GetProviderSchema(ctx, &tfprotov6.GetProviderSchemaRequest{}); err != nil {
		t.Fatal(err)
	}
	ty, version := runSchema()
	raw := []byte(`{"id":"0f8fad5b-d9cb-469f-a165-70867728950e/runs/x_1_1a2b3c4d","workspace_id":"0f8fad5b-d9cb-469f-a165-70867728950e",` +
		`"experiment_name":"x","source_directory":"src","script":"train.py","arguments":["--i","0"],"compute_target":"local",` +
		`"status":"Completed","exit_code":0,"metrics":{"loss":"0.5"},"output_files":[],"snapshot_changes":[],` +
		`"duration_seconds":0.25,"wait_for_completion":true,"gone_attribute":"ignored"}`)

	upgrade := func(s tfprotov6.ProviderServer, v int64, raw []byte) (*tfprotov6.UpgradeResourceStateResponse, tftypes.Value) {
		t.Helper()
		resp, err := s.UpgradeResourceState(ctx, &tfprotov6.UpgradeResourceStateRequest{
			TypeName: experimentRunType, Version: v, RawState: &tfprotov6.RawState{JSON: raw},
		})
		if err != nil {
			t.Fatal(err)
		}
		if resp.UpgradedState == nil {
			return resp, tftypes.Value{}
		}
		val, err := resp.UpgradedState.Unmarshal(ty)
		if err != nil {
			t.Fatal(err)
		}
		return resp, val
	}

	before := fastUpgrades.Load()
	fastResp, fast := upgrade(srv, version, raw)
	if fastUpgrades.Load() != before+1 {
		t.Fatal("a current-version run state did not take the fast path")
	}
	fwResp, fw := upgrade(framework, version, raw)
	if len(fastResp.Diagnostics) != 0 || len(fwResp.Diagnostics) != 0 {
		t.Fatalf("diagnostics: fast %v, framework %v", fastResp.Diagnostics, fwResp.Diagnostics)
	}
	if !fast.Equal(fw) {
		t.Fatalf("fast upgrade\n%v\nframework\n%v", fast, fw)
	}

	before = fastUpgrades.Load()
	if resp, _ := upgrade(srv, version, []byte(`{"arguments": {"a": 1}}`)); len(resp.Diagnostics) == 0 {
		t.Fatal("a state that does not decode: no diagnostic")
	}
	if fastUpgrades.Load() != before {
		t.Fatal("a state that does not decode was answered by the fast path, not the framework")
	}
	_, _ = upgrade(srv, version-1, []byte(`{"id":"`+"/tmp/ws"+`/runs/x_1_1a2b3c4d"}`))
	if fastUpgrades.Load() != before {
		t.Fatal("an older state version was answered by the fast path, not the framework's upgrader")
	}
}

// TestValidateProgramChoice: exactly one of script and command, checked once
// both are known, with the diagnostics ExactlyOneOf gave.
func TestValidateProgramChoice(t *testing.T) {
	str := tftypes.NewValue(tftypes.String, "train.py")
	list := tftypes.NewValue(tftypes.List{ElementType: tftypes.String}, []tftypes.Value{str})
	nullStr := tftypes.NewValue(tftypes.String, nil)
	nullList := tftypes.NewValue(tftypes.List{ElementType: tftypes.String}, nil)
	unknownList := tftypes.NewValue(tftypes.List{ElementType: tftypes.String}, tftypes.UnknownValue)
	for _, c := range []struct {
		name            string
		script, command tftypes.Value
		want            string
	}{
		{"script only", str, nullList, ""},
		{"command only", nullStr, list, ""},
		{"both", str, list, "2 attributes specified when one (and only one) of [script,command] is required"},
		{"neither", nullStr, nullList, "No attribute specified when one (and only one) of [script,command] is required"},
		{"command unknown", nullStr, unknownList, ""},
	} {
		var diags diag.Diagnostics
		validateProgramChoice(map[string]tftypes.Value{"script": c.script, "command": c.command}, &diags)
		got := ""
		if diags.HasError() {
			got = diags[0].Detail()
			if diags[0].Summary() != "Invalid Attribute Combination" {
				t.Errorf("%s: summary %q", c.name, diags[0].Summary())
			}
		}
		if got != c.want {
			t.Errorf("%s: %q, want %q", c.name, got, c.want)
		}
	}
}

// TestFastValidationMatchesFramework: a run configuration validated against
// the settable-only schema gets exactly the diagnostics the framework gives
// with the full schema, valid or not, known or not; one that sets a result is
// left to the full schema.
func TestFastValidationMatchesFramework(t *testing.T) {
	ctx := context.Background()
	srv := NewProtocol6Server("test")().(*fastServer)
	full := runStateType().(tftypes.Object)
	str, strs, object := tfString, tfStrings, tfObject
	rbc := full.AttributeTypes["run_based_compute"].(tftypes.Object)
	tmo := full.AttributeTypes["timeouts"].(tftypes.Object)
	base := map[string]tftypes.Value{
		"workspace_id": str("0f8fad5b-d9cb-469f-a165-70867728950e"), "experiment_name": str("iris"),
		"source_directory": str("src"), "script": str("train.py"), "run_configuration_id": str("0f8fad5b-d9cb-469f-a165-70867728950e/runconfigs/py"),
	}
	with := func(changes map[string]tftypes.Value) tftypes.Value { return runConfigWith(full, base, changes) }
	unset := tftypes.Value{}
	cases := map[string]tftypes.Value{
		"valid":                       with(nil),
		"script and command":          with(map[string]tftypes.Value{"command": strs("python3", "train.py")}),
		"neither script nor command":  with(map[string]tftypes.Value{"script": unset}),
		"empty script":                with(map[string]tftypes.Value{"script": str("")}),
		"empty source_directory":      with(map[string]tftypes.Value{"source_directory": str("")}),
		"bad experiment name":         with(map[string]tftypes.Value{"experiment_name": str("no spaces please")}),
		"command unknown":             with(map[string]tftypes.Value{"script": unset, "command": tftypes.NewValue(tftypes.List{ElementType: tftypes.String}, tftypes.UnknownValue)}),
		"amlcompute without its pool": with(map[string]tftypes.Value{"compute_target": str("amlcompute")}),
		"pool on local":               with(map[string]tftypes.Value{"run_based_compute": object(rbc, map[string]tftypes.Value{"vm_size": str("STANDARD_D1_V2")})}),
		"pool without vm_size": with(map[string]tftypes.Value{"compute_target": str("amlcompute"),
			"run_based_compute": object(rbc, map[string]tftypes.Value{"max_nodes": tftypes.NewValue(tftypes.Number, 0)})}),
		"bad vm_size": with(map[string]tftypes.Value{"compute_target": str("amlcompute"),
			"run_based_compute": object(rbc, map[string]tftypes.Value{"vm_size": str("HUGE")})}),
		"bad timeout":   with(map[string]tftypes.Value{"timeouts": object(tmo, map[string]tftypes.Value{"create": str("soon")})}),
		"sets a result": with(map[string]tftypes.Value{"status": str("Completed")}),
	}
	diagsOf := func(s tfprotov6.ProviderServer, v tftypes.Value) []string {
		t.Helper()
		dv, err := tfprotov6.NewDynamicValue(full, v)
		if err != nil {
			t.Fatal(err)
		}
		resp, err := s.ValidateResourceConfig(ctx, &tfprotov6.ValidateResourceConfigRequest{TypeName: experimentRunType, Config: &dv})
		if err != nil {
			t.Fatal(err)
		}
		var out []string
		for _, d := range resp.Diagnostics {
			out = append(out, fmt.Sprintf("%v %s: %s | %s", d.Severity, d.Attribute, d.Summary, d.Detail))
		}
		sort.Strings(out)
		return out
	}
	for name, v := range cases {
		before := fastValidations.Load()
		fast := diagsOf(srv, v)
		tookFast := fastValidations.Load() != before
		framework := diagsOf(srv.ProviderServer, v)
		if !reflect.DeepEqual(fast, framework) {
			t.Errorf("%s: diagnostics differ\nfast:      %q\nframework: %q", name, fast, framework)
		}
		if tookFast == (name == "sets a result") {
			t.Errorf("%s: fast path taken = %v", name, tookFast)
		}
		if wantErr := name != "valid" && name != "command unknown"; wantErr != (len(framework) > 0) {
			t.Errorf("%s: diagnostics %q, want some = %v", name, framework, wantErr)
		}
	}
}

// TestSetRootAttrsMatchesSetAttribute: setting the snapshot attributes in one
// rewrite gives the plan SetAttribute gives, one by one; a value of the wrong
// type still gets SetAttribute's diagnostic.
func TestSetRootAttrsMatchesSetAttribute(t *testing.T) {
	ctx := context.Background()
	var sresp resource.SchemaResponse
	(&ExperimentRunResource{}).Schema(ctx, resource.SchemaRequest{}, &sresp)
	full := runStateType().(tftypes.Object)
	vals := map[string]tftypes.Value{}
	for name, ty := range full.AttributeTypes {
		vals[name] = tftypes.NewValue(ty, tftypes.UnknownValue)
	}
	vals["source_directory"] = tftypes.NewValue(tftypes.String, "src")
	raw := tftypes.NewValue(full, vals)
	sets := map[string]attr.Value{
		"snapshot_hash": types.StringValue("sha256:ab"), "snapshot_files": types.Int64Value(3),
		"snapshot_bytes": types.Int64Value(1 << 40), "snapshot_changes": listValue(ctx, []string{"+ a.py", "~ b.py"}, &diag.Diagnostics{}),
	}
	one := tfsdk.Plan{Schema: sresp.Schema, Raw: raw}
	var diags diag.Diagnostics
	setRootAttrs(ctx, &one, sets, &diags)
	each := tfsdk.Plan{Schema: sresp.Schema, Raw: raw}
	for name, v := range sets {
		diags.Append(each.SetAttribute(ctx, path.Root(name), v)...)
	}
	// Compared as msgpack (tftypes' Equal does not see known against unknown).
	enc := func(v tftypes.Value) string {
		dv, err := tfprotov6.NewDynamicValue(full, v)
		if err != nil {
			t.Fatal(err)
		}
		return string(dv.MsgPack)
	}
	if diags.HasError() || enc(one.Raw) != enc(each.Raw) {
		t.Fatalf("one rewrite %v\nSetAttribute %v\n%v", one.Raw, each.Raw, diags)
	}
	if enc(one.Raw) == enc(raw) {
		t.Fatal("nothing was set")
	}
	var bad diag.Diagnostics
	setRootAttrs(ctx, &one, map[string]attr.Value{"snapshot_files": types.StringValue("three")}, &bad)
	if !bad.HasError() {
		t.Fatal("a string for snapshot_files: no diagnostic")
	}
}

// TestFastCreatePlanMatchesFramework: the plan of a new run from the fast path
// (the settable attributes planned by the framework on the settable schema,
// the results unknown, then the resource's ModifyPlan) is byte for byte the
// framework's plan on the full schema: planned state, private state,
// replacements and diagnostics, for plain, full, unknown and failing
// configurations. Those that have something to say (a missing script or
// source directory) are left to the framework.
// fastFixture is a configured provider server with a workspace, a Python
// run configuration and a source directory, for comparing the fast paths with
// the framework's.
type fastFixture struct {
	srv    *fastServer
	eng    *engine.Engine
	ws, rc string // ids
	src    string
}

func newFastFixture(t *testing.T) fastFixture {
	t.Helper()
	// The plan checks that the run configuration's interpreter exists.
	py, err := exec.LookPath("python3")
	if err != nil {
		t.Skip("python3 is not on PATH: the plans would fail the run configuration's interpreter check")
	}
	t.Setenv("XDG_CACHE_HOME", t.TempDir())
	t.Chdir(t.TempDir())
	ctx := context.Background()
	srv := NewProtocol6Server("test")().(*fastServer)
	schemas, err := srv.GetProviderSchema(ctx, &tfprotov6.GetProviderSchemaRequest{})
	if err != nil {
		t.Fatal(err)
	}
	// The provider's configuration: an object whose attributes are all null.
	pty := schemas.Provider.ValueType()
	pcfg, err := tfprotov6.NewDynamicValue(pty, tfObject(pty.(tftypes.Object), nil))
	if err != nil {
		t.Fatal(err)
	}
	if resp, err := srv.ConfigureProvider(ctx, &tfprotov6.ConfigureProviderRequest{Config: &pcfg}); err != nil || len(resp.Diagnostics) > 0 {
		t.Fatalf("configure: %v %v", err, resp.Diagnostics)
	}
	eng := srv.p.eng.Load()
	if eng == nil {
		t.Fatal("the provider has no engine after ConfigureProvider")
	}
	ws, err := eng.CreateWorkspace(ctx, engine.WorkspaceSpec{Name: "fast", StoragePath: filepath.Join(t.TempDir(), "ws")})
	if err != nil {
		t.Fatal(err)
	}
	rc, err := eng.PutRunConfig(ctx, ws.ID, engine.RunConfigSpec{Name: "py", Framework: "Python",
		Environment: env.Environment{Python: &env.Python{UserManagedDependencies: true, InterpreterPath: py}}})
	if err != nil {
		t.Fatal(err)
	}
	src := t.TempDir()
	for name, body := range map[string]string{
		"train.py":    "print(1)\n",
		"lib/util.py": "X = 1\n",
		"metrics.py":  "from azureml.core import Run\nrun = Run.get_context()\nrun.log('acc', 0.9)\nprint('done')\n",
		"fail.py":     "import sys\nprint('bad input', file=sys.stderr)\nsys.exit(3)\n",
	} {
		if err := os.MkdirAll(filepath.Dir(filepath.Join(src, name)), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(src, name), []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return fastFixture{srv: srv, eng: eng, ws: ws.ID, rc: rc.ID, src: src}
}

func TestFastCreatePlanMatchesFramework(t *testing.T) {
	f := newFastFixture(t)
	ctx := context.Background()
	srv, src := f.srv, f.src

	full := runStateType().(tftypes.Object)
	str, strs, object := tfString, tfStrings, tfObject
	strMap := func(kv ...string) tftypes.Value {
		m := map[string]tftypes.Value{}
		for i := 0; i+1 < len(kv); i += 2 {
			m[kv[i]] = str(kv[i+1])
		}
		return tftypes.NewValue(tftypes.Map{ElementType: tftypes.String}, m)
	}
	unknown := func(name string) tftypes.Value {
		return tftypes.NewValue(full.AttributeTypes[name], tftypes.UnknownValue)
	}
	rbc := full.AttributeTypes["run_based_compute"].(tftypes.Object)
	tmo := full.AttributeTypes["timeouts"].(tftypes.Object)
	base := map[string]tftypes.Value{
		"workspace_id": str(f.ws), "experiment_name": str("iris"), "source_directory": str(src),
		"script": str("train.py"), "run_configuration_id": str(f.rc),
	}
	unset := tftypes.Value{}
	with := func(changes map[string]tftypes.Value) tftypes.Value { return runConfigWith(full, base, changes) }
	cases := []struct {
		name string
		cfg  tftypes.Value
		fast bool
	}{
		{"script", with(nil), true},
		{"sweep member", with(map[string]tftypes.Value{"arguments": strs("--i", "7")}), true},
		{"command", with(map[string]tftypes.Value{"script": unset, "command": strs("python3", "train.py", "--lr", "0.1")}), true},
		{"everything set", with(map[string]tftypes.Value{
			"arguments": strs("--epochs", "3"), "environment_variables": strMap("A", "1", "B", "two"),
			"triggers": strMap("data", "v2"), "tags": strMap("team", "ml"), "compute_target": str("local"),
			"wait_for_completion": tftypes.NewValue(tftypes.Bool, false), "allow_failure": tftypes.NewValue(tftypes.Bool, true),
			"timeouts": object(tmo, map[string]tftypes.Value{"create": str("1h"), "delete": str("2m")}),
		}), true},
		{"source_directory unknown", with(map[string]tftypes.Value{"source_directory": unknown("source_directory")}), true},
		{"arguments unknown", with(map[string]tftypes.Value{"arguments": unknown("arguments")}), true},
		{"workspace unknown", with(map[string]tftypes.Value{"workspace_id": unknown("workspace_id")}), true},
		// Optional and computed with a default: an unknown stays unknown.
		{"compute_target unknown", with(map[string]tftypes.Value{"compute_target": unknown("compute_target"),
			"wait_for_completion": unknown("wait_for_completion")}), true},
		{"timeouts unknown", with(map[string]tftypes.Value{"timeouts": unknown("timeouts")}), true},
		{"script missing", with(map[string]tftypes.Value{"script": str("nope.py")}), false},
		{"source_directory missing", with(map[string]tftypes.Value{"source_directory": str(filepath.Join(src, "gone"))}), false},
		// Checked when the run is submitted, not in its plan: both paths plan it.
		{"no such run configuration", with(map[string]tftypes.Value{"run_configuration_id": str(f.ws + "/runconfigs/nope")}), true},
		{"run-based pool", with(map[string]tftypes.Value{"compute_target": str("amlcompute"),
			"run_based_compute": object(rbc, map[string]tftypes.Value{"vm_size": str("STANDARD_D1_V2")})}), true},
	}
	nullPrior, err := tfprotov6.NewDynamicValue(full, tftypes.NewValue(full, nil))
	if err != nil {
		t.Fatal(err)
	}
	type answer struct {
		state, private, replace string
		diags                   []string
	}
	plan := func(s tfprotov6.ProviderServer, cfg tftypes.Value) answer {
		t.Helper()
		dv, err := tfprotov6.NewDynamicValue(full, cfg)
		if err != nil {
			t.Fatal(err)
		}
		// For a create, terraform proposes the configuration itself.
		proposed := dv
		prior := nullPrior
		resp, err := s.PlanResourceChange(ctx, &tfprotov6.PlanResourceChangeRequest{
			TypeName: experimentRunType, PriorState: &prior, ProposedNewState: &proposed, Config: &dv,
			ClientCapabilities: &tfprotov6.PlanResourceChangeClientCapabilities{},
		})
		if err != nil {
			t.Fatal(err)
		}
		a := answer{private: string(resp.PlannedPrivate), replace: fmt.Sprint(resp.RequiresReplace)}
		if resp.PlannedState != nil {
			// Compared as text: it tells unknown from null from a value (Equal
			// does not), and sorts map keys (msgpack follows Go's map order).
			st, err := resp.PlannedState.Unmarshal(full)
			if err != nil {
				t.Fatal(err)
			}
			a.state = st.String()
		}
		for _, d := range resp.Diagnostics {
			a.diags = append(a.diags, fmt.Sprintf("%v %s: %s | %s", d.Severity, d.Attribute, d.Summary, d.Detail))
		}
		sort.Strings(a.diags)
		return a
	}
	knownHash := 0
	for _, c := range cases {
		before := fastCreates.Load()
		fast := plan(srv, c.cfg)
		tookFast := fastCreates.Load() != before
		framework := plan(srv.ProviderServer, c.cfg)
		if !reflect.DeepEqual(fast, framework) {
			t.Errorf("%s: plans differ\nfast:      %s\n  private %q replace %s diags %q\nframework: %s\n  private %q replace %s diags %q",
				c.name, fast.state, fast.private, fast.replace, fast.diags, framework.state, framework.private, framework.replace, framework.diags)
		}
		if tookFast != c.fast {
			t.Errorf("%s: fast path taken = %v, want %v (framework diagnostics %q)", c.name, tookFast, c.fast, framework.diags)
		}
		if c.fast != (len(framework.diags) == 0) {
			t.Errorf("%s: framework diagnostics %q", c.name, framework.diags)
		}
		if strings.Contains(framework.state, `"snapshot_hash":tftypes.String<"sha256:`) {
			knownHash++
		}
	}
	if knownHash < 4 {
		t.Errorf("only %d plans hashed the snapshot: ModifyPlan did not run in them", knownHash)
	}
}

// TestRunCreateRules: the schema facts createRunPlan's create plan rests on,
// and the nested schemas it refuses to model.
func TestRunCreateRules(t *testing.T) {
	rules, ok := runCreateRules()
	if !ok {
		t.Fatal("runCreateRules refuses aml_experiment_run's schema: every create plan would go to the framework")
	}
	for name, want := range map[string]string{
		"compute_target": `tftypes.String<"local">`, "wait_for_completion": `tftypes.Bool<"true">`, "allow_failure": `tftypes.Bool<"false">`,
	} {
		if r := rules[name]; r.def == nil || r.def.String() != want || r.computedOnly {
			t.Errorf("%s: rule %+v, want default %s", name, r, want)
		}
	}
	for name, want := range map[string]createRule{
		"status": {computed: true, computedOnly: true}, "id": {computed: true, computedOnly: true},
		"script": {}, "timeouts": {}, "workspace_id": {},
	} {
		if r := rules[name]; r != want {
			t.Errorf("%s: rule %+v, want %+v", name, r, want)
		}
	}
	if len(rules) != len(runResourceSchema().Attributes) {
		t.Errorf("%d rules for %d attributes", len(rules), len(runResourceSchema().Attributes))
	}
	plain := schema.SingleNestedAttribute{Optional: true, Attributes: map[string]schema.Attribute{"a": schema.StringAttribute{Optional: true}}}
	computedInside := schema.SingleNestedBlock{Attributes: map[string]schema.Attribute{
		"a": schema.StringAttribute{Optional: true, Computed: true, Default: stringdefault.StaticString("x")}}}
	deeper := schema.ListNestedBlock{NestedObject: schema.NestedBlockObject{Blocks: map[string]schema.Block{"inner": computedInside}}}
	for _, c := range []struct {
		name string
		x    any
		want bool
	}{{"plain nested attribute", plain, true}, {"computed inside a block", computedInside, false},
		{"computed two levels down", deeper, false}, {"flat attribute", schema.StringAttribute{Computed: true}, true}} {
		if got := plainNested(c.x); got != c.want {
			t.Errorf("plainNested(%s) = %v, want %v", c.name, got, c.want)
		}
	}
}

func tfString(s string) tftypes.Value { return tftypes.NewValue(tftypes.String, s) }

func tfStrings(ss ...string) tftypes.Value {
	vs := make([]tftypes.Value, len(ss))
	for i, s := range ss {
		vs[i] = tfString(s)
	}
	return tftypes.NewValue(tftypes.List{ElementType: tftypes.String}, vs)
}

// tfObject is an object of type ty with set's attributes, every other one null.
func tfObject(ty tftypes.Object, set map[string]tftypes.Value) tftypes.Value {
	vals := map[string]tftypes.Value{}
	for name, aty := range ty.AttributeTypes {
		if v, ok := set[name]; ok {
			vals[name] = v
		} else {
			vals[name] = tftypes.NewValue(aty, nil)
		}
	}
	return tftypes.NewValue(ty, vals)
}

// runConfigWith is a run configuration of type ty: base with changes, where a
// zero tftypes.Value removes the attribute.
func runConfigWith(ty tftypes.Object, base, changes map[string]tftypes.Value) tftypes.Value {
	set := map[string]tftypes.Value{}
	for k, v := range base {
		set[k] = v
	}
	for k, v := range changes {
		if v.Type() == nil {
			delete(set, k)
		} else {
			set[k] = v
		}
	}
	return tfObject(ty, set)
}
