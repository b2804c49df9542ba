package provider

import (
	"context"
	"reflect"
	"sync"

	"github.com/hashicorp/terraform-plugin-framework/attr"
	"github.com/hashicorp/terraform-plugin-framework/attr/xattr"
	"github.com/hashicorp/terraform-plugin-framework/diag"
	"github.com/hashicorp/terraform-plugin-framework/path"
	"github.com/hashicorp/terraform-plugin-framework/tfsdk"
	"github.com/hashicorp/terraform-plugin-go/tftypes"
)

// modelCodec converts between a resource's model struct (fields of attr.Value
// types tagged `tfsdk:"name"`, one per top-level attribute and block) and its
// raw value, as the framework's Get and Set do (reflect.Into, FromStruct) for
// such a model: each field is its attribute type's ValueFromTerraform of the
// attribute's value, and the value is the object of the fields'
// ToTerraformValue. It skips the framework's path tracking and per-value
// diagnostics, which for aml_experiment_run's 43 attributes were most of the
// cost of a Get or a Set, on every plan and create of every run. The framework
// stays the one that words errors: decode and encode report false for
// anything they do not convert, and the callers (getModel, setModel) then use
// the framework's Get and Set.
type modelCodec struct {
	ok     bool
	obj    tftypes.Object
	names  []string
	fields []int
	types  []attr.Type
}

// newModelCodec builds the codec of model (a struct type) for schema type ty;
// it is not ok (every call falls back) unless fields and attributes match one
// to one.
func newModelCodec(model reflect.Type, ty attr.TypeWithAttributeTypes) modelCodec {
	ctx := context.Background()
	obj, ok := ty.TerraformType(ctx).(tftypes.Object)
	attrTypes := ty.AttributeTypes()
	c := modelCodec{obj: obj}
	if !ok || model.Kind() != reflect.Struct {
		return c
	}
	valueIface := reflect.TypeOf((*attr.Value)(nil)).Elem()
	seen := map[string]bool{}
	for i := 0; i < model.NumField(); i++ {
		f := model.Field(i)
		name := f.Tag.Get("tfsdk")
		if name == "" || name == "-" {
			continue
		}
		at, exists := attrTypes[name]
		if !exists || seen[name] || !f.IsExported() || !f.Type.Implements(valueIface) {
			return c
		}
		seen[name] = true
		c.names, c.fields, c.types = append(c.names, name), append(c.fields, i), append(c.types, at)
	}
	if len(seen) != len(attrTypes) || len(obj.AttributeTypes) != len(attrTypes) {
		return c
	}
	c.ok = true
	return c
}

// decode sets *dst (a pointer to the model) from v; false, with *dst in any
// state, when it cannot.
func (c modelCodec) decode(ctx context.Context, v tftypes.Value, dst any) bool {
	if !c.ok || !v.IsKnown() || v.IsNull() || !v.Type().Equal(c.obj) {
		return false
	}
	var vals map[string]tftypes.Value
	if v.As(&vals) != nil {
		return false
	}
	rv := reflect.ValueOf(dst)
	if rv.Kind() != reflect.Pointer || rv.IsNil() {
		return false
	}
	rv = rv.Elem()
	for i, name := range c.names {
		tv := vals[name]
		av, err := c.types[i].ValueFromTerraform(ctx, tv)
		if err != nil || av == nil || !valid(ctx, c.types[i], av, tv, name) {
			return false
		}
		field := rv.Field(c.fields[i])
		if reflect.TypeOf(av) != field.Type() {
			return false
		}
		field.Set(reflect.ValueOf(av))
	}
	return true
}

// encode is the raw value of src (the model, or a pointer to it); false when
// a field does not convert to its attribute's type.
func (c modelCodec) encode(ctx context.Context, src any) (tftypes.Value, bool) {
	rv := reflect.ValueOf(src)
	if rv.Kind() == reflect.Pointer {
		if rv.IsNil() {
			return tftypes.Value{}, false
		}
		rv = rv.Elem()
	}
	if !c.ok || rv.Kind() != reflect.Struct {
		return tftypes.Value{}, false
	}
	vals := make(map[string]tftypes.Value, len(c.names))
	for i, name := range c.names {
		av, ok := rv.Field(c.fields[i]).Interface().(attr.Value)
		if !ok || av == nil || !c.types[i].Equal(av.Type(ctx)) {
			return tftypes.Value{}, false // e.g. a zero types.List, which has no element type
		}
		tv, err := av.ToTerraformValue(ctx)
		if err != nil || !valid(ctx, c.types[i], av, tv, name) {
			return tftypes.Value{}, false
		}
		vals[name] = tv
	}
	if tftypes.ValidateValue(c.obj, vals) != nil {
		return tftypes.Value{}, false
	}
	return tftypes.NewValue(c.obj, vals), true
}

// valid is the framework's check of an attribute value as Get and Set
// convert it: the value's own ValidateAttribute, else its type's Validate.
func valid(ctx context.Context, t attr.Type, av attr.Value, tv tftypes.Value, name string) bool {
	if va, ok := av.(xattr.ValidateableAttribute); ok {
		var resp xattr.ValidateAttributeResponse
		va.ValidateAttribute(ctx, xattr.ValidateAttributeRequest{Path: path.Root(name)}, &resp)
		return !resp.Diagnostics.HasError()
	}
	if tw, ok := t.(xattr.TypeWithValidate); ok { //nolint:staticcheck // deprecated, but the framework still calls it
		return !tw.Validate(ctx, tv, path.Root(name)).HasError()
	}
	return true
}

// runCodec is ExperimentRunResourceModel's codec for aml_experiment_run's schema.
var runCodec = sync.OnceValue(func() modelCodec {
	ty, ok := runResourceSchema().Type().(attr.TypeWithAttributeTypes)
	if !ok {
		return modelCodec{}
	}
	return newModelCodec(reflect.TypeOf(ExperimentRunResourceModel{}), ty)
})

// getRunModel is Get of a run's plan, state or configuration into m: the
// codec, else the framework's Get (get), which words what is wrong.
func getRunModel(ctx context.Context, raw tftypes.Value, get func(context.Context, any) diag.Diagnostics, m *ExperimentRunResourceModel) diag.Diagnostics {
	if runCodec().decode(ctx, raw, m) {
		return nil
	}
	return get(ctx, m)
}

// setRunModel is state.Set(ctx, m) through the codec when it can.
func setRunModel(ctx context.Context, state *tfsdk.State, m *ExperimentRunResourceModel) diag.Diagnostics {
	c := runCodec()
	if v, ok := c.encode(ctx, m); ok {
		// Set of a raw value only checks its type, which is the codec's, the
		// schema's own when the schema has as many attributes (building the
		// schema's type again for the check cost more than the encoding).
		if state.Schema != nil && len(state.Schema.GetAttributes())+len(state.Schema.GetBlocks()) == len(c.obj.AttributeTypes) {
			state.Raw = v
			return nil
		}
		return state.Set(ctx, v)
	}
	return state.Set(ctx, m)
}
