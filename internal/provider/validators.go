package provider

import (
	"context"
	"fmt"
	"regexp"

	"github.com/hashicorp/terraform-plugin-framework/schema/validator"
)

// notOption matches requirement specs, not pip command-line options.
var notOption = regexp.MustCompile(`^\s*[^-\s]`)

var envNamePattern = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_]*$`)

// envNamesValidator checks that every key of a map is a valid environment variable name.
type envNamesValidator struct{}

func (envNamesValidator) Description(ctx context.Context) string {
	return "keys must be environment variable names: letters, digits and '_', not starting with a digit"
}

func (v envNamesValidator) MarkdownDescription(ctx context.Context) string { return v.Description(ctx) }

func (v envNamesValidator) ValidateMap(ctx context.Context, req validator.MapRequest, resp *validator.MapResponse) {
	if req.ConfigValue.IsNull() || req.ConfigValue.IsUnknown() {
		return
	}
	for k := range req.ConfigValue.Elements() {
		if !envNamePattern.MatchString(k) {
			resp.Diagnostics.AddAttributeError(req.Path.AtMapKey(k), "Invalid environment variable name",
				fmt.Sprintf("%s: %q is not a valid environment variable name; %s", req.Path, k, v.Description(ctx)))
		}
	}
}
