package provider

import (
	"context"
	"reflect"
	"testing"

	"github.com/hashicorp/terraform-plugin-framework/tfsdk"
	"github.com/hashicorp/terraform-plugin-framework/types"
	"github.com/hashicorp/terraform-plugin-go/tftypes"
)

// TestRunModelCodecMatchesFramework: the codec decodes raw values into the
// same models as the framework's Get and encodes models into the same values
// as its Set, for configurations, plans with unknowns and full states; and it
// refuses what it cannot convert, leaving the framework to word the error.
func TestRunModelCodecMatchesFramework(t *testing.T) {
	ctx := context.Background()
	c := runCodec()
	if !c.ok {
		t.Fatal("the codec refuses ExperimentRunResourceModel: every Get and Set would go to the framework")
	}
	s := runResourceSchema()
	full := runStateType().(tftypes.Object)
	num := func(f float64) tftypes.Value { return tftypes.NewValue(tftypes.Number, f) }
	unknown := func(name string) tftypes.Value {
		return tftypes.NewValue(full.AttributeTypes[name], tftypes.UnknownValue)
	}
	nums := func(kv map[string]float64) tftypes.Value {
		m := map[string]tftypes.Value{}
		for k, v := range kv {
			m[k] = num(v)
		}
		return tftypes.NewValue(tftypes.Map{ElementType: tftypes.Number}, m)
	}
	strMap := func(kv map[string]string) tftypes.Value {
		m := map[string]tftypes.Value{}
		for k, v := range kv {
			m[k] = tfString(v)
		}
		return tftypes.NewValue(tftypes.Map{ElementType: tftypes.String}, m)
	}
	tmo := full.AttributeTypes["timeouts"].(tftypes.Object)
	rbc := full.AttributeTypes["run_based_compute"].(tftypes.Object)
	config := map[string]tftypes.Value{
		"workspace_id": tfString("ws"), "experiment_name": tfString("e"), "source_directory": tfString("/src"),
		"script": tfString("train.py"), "run_configuration_id": tfString("ws/runconfigs/py"),
		"arguments": tfStrings("--lr", "0.1"), "environment_variables": strMap(map[string]string{"A": "1"}),
		"timeouts": tfObject(tmo, map[string]tftypes.Value{"create": tfString("1h")}),
	}
	planned := map[string]tftypes.Value{}
	for k, v := range config {
		planned[k] = v
	}
	_, left := runConfigSchema()
	for name := range left {
		planned[name] = unknown(name)
	}
	planned["compute_target"] = tfString("amlcompute")
	planned["run_based_compute"] = tfObject(rbc, map[string]tftypes.Value{"vm_size": tfString("STANDARD_D1_V2"), "max_nodes": num(2)})
	state := map[string]tftypes.Value{}
	for k, v := range planned {
		state[k] = v
	}
	for name, v := range map[string]tftypes.Value{
		"id": tfString("ws/runs/r1"), "run_id": tfString("r1"), "status": tfString("Completed"), "failure_reason": tfString(""),
		"exit_code": num(0), "duration_seconds": num(1.25), "metrics": nums(map[string]float64{"acc": 0.9, "loss": 0.1}),
		"params": strMap(map[string]string{"lr": "0.1"}), "script_tags": strMap(nil), "output_files": tfStrings("model.pkl"),
		"output_file_count": num(1), "metric_count": num(2), "log_tail": tfString("done\n"), "snapshot_changes": tfStrings(),
		"snapshot_hash": tfString("sha256:x"), "snapshot_files": num(3), "snapshot_bytes": num(120),
		"environment_cache_hit": tftypes.NewValue(tftypes.Bool, true), "environment_build_seconds": num(0),
	} {
		state[name] = v
	}
	for _, v := range []struct {
		name string
		val  tftypes.Value
	}{
		{"configuration", tfObject(full, config)},
		{"plan with unknowns", tfObject(full, planned)},
		{"state", tfObject(full, state)},
	} {
		var fast, framework ExperimentRunResourceModel
		if !c.decode(ctx, v.val, &fast) {
			t.Errorf("%s: the codec did not decode it", v.name)
			continue
		}
		if diags := (tfsdk.State{Schema: s, Raw: v.val}).Get(ctx, &framework); diags.HasError() {
			t.Fatalf("%s: framework Get: %v", v.name, diags)
		}
		if !reflect.DeepEqual(fast, framework) {
			t.Errorf("%s: decoded\n%+v\nframework\n%+v", v.name, fast, framework)
		}
		enc, ok := c.encode(ctx, &framework)
		st := tfsdk.State{Schema: s, Raw: tftypes.NewValue(full, nil)}
		if diags := st.Set(ctx, &framework); diags.HasError() {
			t.Fatalf("%s: framework Set: %v", v.name, diags)
		}
		if !ok || !enc.Equal(st.Raw) || enc.String() != st.Raw.String() || enc.String() != v.val.String() {
			t.Errorf("%s: encoded (ok %v)\n%s\nframework\n%s", v.name, ok, enc, st.Raw)
		}
	}
	// What it refuses.
	var m ExperimentRunResourceModel
	if c.decode(ctx, tftypes.NewValue(full, nil), &m) || c.decode(ctx, tftypes.NewValue(full, tftypes.UnknownValue), &m) {
		t.Error("the codec decoded a null or unknown object")
	}
	if c.decode(ctx, tfObject(runConfigSchemaType(), nil), &m) {
		t.Error("the codec decoded a value of another type")
	}
	// An integer attribute holding a fraction: the framework's Get refuses
	// it, so the codec must too.
	frac := map[string]tftypes.Value{}
	for k, v := range state {
		frac[k] = v
	}
	frac["exit_code"] = num(1.5)
	fv := tfObject(full, frac)
	if c.decode(ctx, fv, &m) {
		t.Error("the codec decoded exit_code = 1.5")
	}
	if diags := getRunModel(ctx, fv, (tfsdk.State{Schema: s, Raw: fv}).Get, &m); !diags.HasError() {
		t.Error("getRunModel of exit_code = 1.5 gave no error (the framework's Get words it)")
	}
	var bad ExperimentRunResourceModel
	if diags := (tfsdk.State{Schema: s, Raw: tfObject(full, state)}).Get(ctx, &bad); diags.HasError() {
		t.Fatal(diags)
	}
	bad.Arguments = types.List{} // no element type
	if _, ok := c.encode(ctx, &bad); ok {
		t.Error("the codec encoded a list with no element type")
	}
	st := tfsdk.State{Schema: s, Raw: tftypes.NewValue(full, nil)}
	if diags := setRunModel(ctx, &st, &bad); !diags.HasError() {
		t.Error("setRunModel of a list with no element type gave no error (the framework's Set words it)")
	}
}

func runConfigSchemaType() tftypes.Object {
	ty, _ := runConfigSchema()
	return ty
}
