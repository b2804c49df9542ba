package provider

import (
	"context"
	"testing"

	"github.com/hashicorp/terraform-plugin-framework/diag"
	"github.com/hashicorp/terraform-plugin-go/tfprotov6"
	"github.com/hashicorp/terraform-plugin-go/tftypes"
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
