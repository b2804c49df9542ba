package provider

import (
	"fmt"
	"net/url"
	"strings"

	"github.com/hashicorp/terraform-plugin-framework-validators/stringvalidator"
	"github.com/hashicorp/terraform-plugin-framework/diag"
	"github.com/hashicorp/terraform-plugin-framework/path"
	"github.com/hashicorp/terraform-plugin-framework/provider/schema"
	"github.com/hashicorp/terraform-plugin-framework/schema/validator"
	"github.com/hashicorp/terraform-plugin-framework/types"

	"github.com/openaml/terraform-provider-aml/internal/engine"
)

// SharedBackendModel is the provider's shared_backend block: where shared
// workspaces keep their records (PostgreSQL) and files (an S3-compatible
// bucket).
type SharedBackendModel struct {
	Postgres   types.String `tfsdk:"postgres"`
	SecretsKey types.String `tfsdk:"secrets_key"`
	CacheDir   types.String `tfsdk:"cache_dir"`
	S3         *S3Model     `tfsdk:"s3"`
}

// S3Model is the bucket of a shared backend.
type S3Model struct {
	Bucket          types.String `tfsdk:"bucket"`
	Prefix          types.String `tfsdk:"prefix"`
	Endpoint        types.String `tfsdk:"endpoint"`
	Region          types.String `tfsdk:"region"`
	Profile         types.String `tfsdk:"profile"`
	AccessKeyID     types.String `tfsdk:"access_key_id"`
	SecretAccessKey types.String `tfsdk:"secret_access_key"`
	SessionToken    types.String `tfsdk:"session_token"`
}

func sharedBackendBlock() schema.SingleNestedBlock {
	return schema.SingleNestedBlock{
		MarkdownDescription: "Where workspaces with `backend = \"shared\"` live, for teams and CI: records (runs, metrics, targets, run configurations, " +
			"the pool queue and leases) in PostgreSQL, files (snapshot blobs, run outputs and logs) in an S3-compatible bucket, and a cache on each " +
			"machine that may be lost at any time. Several workspaces can share one database and one bucket. " +
			"Without this block every workspace is embedded (a directory).",
		Attributes: map[string]schema.Attribute{
			"postgres": schema.StringAttribute{
				Optional:  true,
				Sensitive: true,
				MarkdownDescription: "PostgreSQL connection string, as a `postgres://` URL or `key=value` pairs (libpq's forms). " +
					"What it leaves out comes from the `PG*` environment variables (`PGHOST`, `PGPORT`, `PGDATABASE`, `PGUSER`, `PGPASSWORD`, `PGSSLMODE`, ...) and `~/.pgpass`, as with `psql`; " +
					"empty or unset uses them alone.",
			},
			"secrets_key": schema.StringAttribute{
				Optional:  true,
				Sensitive: true,
				MarkdownDescription: "Key that seals SSH credentials of compute targets into the database (XChaCha20-Poly1305), so that every machine holding the same key can use them; " +
					"it is stored nowhere. Default: the `AML_SECRETS_KEY` environment variable. Without a key the credentials stay in the cache of the machine that attached the target (mode 0600), " +
					"and other machines need them in their configuration. Use a random string of 32 characters or more (`openssl rand -base64 32`).",
				Validators: []validator.String{stringvalidator.LengthAtLeast(16)},
			},
			"cache_dir": schema.StringAttribute{
				Optional:            true,
				MarkdownDescription: "This machine's cache of shared workspaces (snapshot blobs, built environments, run directories). Default: `terraform-provider-aml/workspaces` under the user cache directory (`$XDG_CACHE_HOME` or `~/.cache`).",
				Validators:          []validator.String{stringvalidator.LengthAtLeast(1)},
			},
		},
		Blocks: map[string]schema.Block{
			"s3": schema.SingleNestedBlock{
				MarkdownDescription: "The S3-compatible bucket (AWS S3, MinIO, Ceph, versitygw, ...). Credentials not given here come from the AWS environment: " +
					"`AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`, `AWS_SESSION_TOKEN`, `AWS_PROFILE`, `~/.aws/config` and `~/.aws/credentials`. " +
					"Without this block a shared workspace's files stay on the machine that made them.",
				Attributes: map[string]schema.Attribute{
					"bucket": schema.StringAttribute{
						Optional:            true,
						MarkdownDescription: "Bucket name (required in the block). The bucket must exist.",
						Validators:          []validator.String{stringvalidator.LengthAtLeast(1)},
					},
					"prefix": schema.StringAttribute{
						Optional:            true,
						MarkdownDescription: "Key prefix inside the bucket, e.g. `ml/aml`. Each workspace keeps its files under `<prefix>/<workspace id>/`.",
					},
					"endpoint": schema.StringAttribute{
						Optional:            true,
						MarkdownDescription: "URL of an S3-compatible server, e.g. `https://minio.example.com:9000`; buckets are then addressed path-style. Default: AWS S3 (or `AWS_ENDPOINT_URL_S3`).",
					},
					"region": schema.StringAttribute{
						Optional:            true,
						MarkdownDescription: "Region. Default: `AWS_REGION` or the profile's, else `us-east-1`.",
					},
					"profile": schema.StringAttribute{
						Optional:            true,
						MarkdownDescription: "Named profile of `~/.aws/config`. Default: `AWS_PROFILE`.",
					},
					"access_key_id": schema.StringAttribute{
						Optional:            true,
						Sensitive:           true,
						MarkdownDescription: "Access key id; with `secret_access_key`.",
					},
					"secret_access_key": schema.StringAttribute{
						Optional:            true,
						Sensitive:           true,
						MarkdownDescription: "Secret access key; with `access_key_id`.",
					},
					"session_token": schema.StringAttribute{
						Optional:            true,
						Sensitive:           true,
						MarkdownDescription: "Session token of temporary credentials.",
					},
				},
			},
		},
	}
}

// toEngine checks the block and converts it. A diagnostic names the attribute
// and what is valid, never a secret value.
func (m *SharedBackendModel) toEngine(diags *diag.Diagnostics) *engine.SharedBackend {
	if m == nil {
		return nil
	}
	b := &engine.SharedBackend{
		Postgres:   m.Postgres.ValueString(),
		SecretsKey: m.SecretsKey.ValueString(),
		CacheDir:   m.CacheDir.ValueString(),
	}
	if s := m.S3; s != nil {
		b.S3.Bucket = s.Bucket.ValueString()
		b.S3.Prefix = s.Prefix.ValueString()
		b.S3.Endpoint = s.Endpoint.ValueString()
		b.S3.Region = s.Region.ValueString()
		b.S3.Profile = s.Profile.ValueString()
		b.S3.AccessKeyID = s.AccessKeyID.ValueString()
		b.S3.SecretAccessKey = s.SecretAccessKey.ValueString()
		b.S3.SessionToken = s.SessionToken.ValueString()
		at := path.Root("shared_backend").AtName("s3")
		if b.S3.Bucket == "" {
			diags.AddAttributeError(at.AtName("bucket"), "Missing bucket", "shared_backend.s3.bucket is required in an s3 block: the name of an existing bucket.")
		}
		if (b.S3.AccessKeyID == "") != (b.S3.SecretAccessKey == "") {
			diags.AddAttributeError(at.AtName("secret_access_key"), "Incomplete S3 credentials",
				"shared_backend.s3.access_key_id and secret_access_key go together: set both, or neither to use the AWS environment (AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_PROFILE).")
		}
		if e := b.S3.Endpoint; e != "" {
			if u, err := url.Parse(e); err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
				diags.AddAttributeError(at.AtName("endpoint"), "Invalid S3 endpoint",
					fmt.Sprintf("shared_backend.s3.endpoint %q is not a URL: use http://host:port or https://host[:port].", e))
			}
		}
		if p := strings.Trim(b.S3.Prefix, "/"); strings.Contains(p, "//") || strings.Contains("/"+p+"/", "/../") || strings.Contains("/"+p+"/", "/./") {
			diags.AddAttributeError(at.AtName("prefix"), "Invalid S3 prefix",
				fmt.Sprintf("shared_backend.s3.prefix %q has an empty, \".\" or \"..\" segment: use names separated by single slashes, e.g. \"ml/aml\".", b.S3.Prefix))
		}
	}
	return b
}

// unknown reports a block whose values are not known yet (they
// come from another resource): the provider can only be configured once
// they are.
func (m *SharedBackendModel) unknown() bool {
	if m == nil {
		return false
	}
	vals := []types.String{m.Postgres, m.SecretsKey, m.CacheDir}
	if m.S3 != nil {
		vals = append(vals, m.S3.Bucket, m.S3.Prefix, m.S3.Endpoint, m.S3.Region, m.S3.Profile, m.S3.AccessKeyID, m.S3.SecretAccessKey, m.S3.SessionToken)
	}
	for _, v := range vals {
		if v.IsUnknown() {
			return true
		}
	}
	return false
}
