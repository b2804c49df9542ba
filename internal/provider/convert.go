package provider

import (
	"context"
	"time"

	"github.com/hashicorp/terraform-plugin-framework/attr"
	"github.com/hashicorp/terraform-plugin-framework/diag"
	"github.com/hashicorp/terraform-plugin-framework/types"
)

type diagAppender interface {
	Append(...diag.Diagnostic)
}

// stringMap converts a Terraform map(string) to Go; null gives nil.
func stringMap(ctx context.Context, m types.Map, diags diagAppender) map[string]string {
	if m.IsNull() || m.IsUnknown() {
		return nil
	}
	out := map[string]string{}
	diags.Append(m.ElementsAs(ctx, &out, false)...)
	return out
}

// stringList converts a Terraform list(string) to Go; null gives nil.
func stringList(ctx context.Context, l types.List, diags diagAppender) []string {
	if l.IsNull() || l.IsUnknown() {
		return nil
	}
	var out []string
	diags.Append(l.ElementsAs(ctx, &out, false)...)
	return out
}

func mapValue(ctx context.Context, m map[string]string, diags diagAppender) types.Map {
	v, d := types.MapValueFrom(ctx, types.StringType, m)
	diags.Append(d...)
	return v
}

func listValue(ctx context.Context, l []string, diags diagAppender) types.List {
	if l == nil {
		l = []string{}
	}
	v, d := types.ListValueFrom(ctx, types.StringType, l)
	diags.Append(d...)
	return v
}

func numberMap(m map[string]float64) types.Map {
	elems := make(map[string]attr.Value, len(m))
	for k, v := range m {
		elems[k] = types.Float64Value(v)
	}
	return types.MapValueMust(types.Float64Type, elems)
}

func rfc3339(t time.Time) string {
	if t.IsZero() {
		return ""
	}
	return t.UTC().Format(time.RFC3339)
}

func timePtr(t *time.Time) types.String {
	if t == nil {
		return types.StringNull()
	}
	return types.StringValue(rfc3339(*t))
}
