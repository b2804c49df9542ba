package provider

import (
	"context"

	"github.com/hashicorp/terraform-plugin-framework-timeouts/resource/timeouts"
	"github.com/hashicorp/terraform-plugin-framework-validators/int64validator"
	"github.com/hashicorp/terraform-plugin-framework-validators/objectvalidator"
	"github.com/hashicorp/terraform-plugin-framework-validators/resourcevalidator"
	"github.com/hashicorp/terraform-plugin-framework-validators/stringvalidator"
	"github.com/hashicorp/terraform-plugin-framework/attr"
	"github.com/hashicorp/terraform-plugin-framework/diag"
	"github.com/hashicorp/terraform-plugin-framework/path"
	"github.com/hashicorp/terraform-plugin-framework/resource"
	"github.com/hashicorp/terraform-plugin-framework/resource/schema"
	"github.com/hashicorp/terraform-plugin-framework/resource/schema/booldefault"
	"github.com/hashicorp/terraform-plugin-framework/resource/schema/boolplanmodifier"
	"github.com/hashicorp/terraform-plugin-framework/resource/schema/int64default"
	"github.com/hashicorp/terraform-plugin-framework/resource/schema/int64planmodifier"
	"github.com/hashicorp/terraform-plugin-framework/resource/schema/listplanmodifier"
	"github.com/hashicorp/terraform-plugin-framework/resource/schema/objectplanmodifier"
	"github.com/hashicorp/terraform-plugin-framework/resource/schema/planmodifier"
	"github.com/hashicorp/terraform-plugin-framework/resource/schema/stringplanmodifier"
	"github.com/hashicorp/terraform-plugin-framework/schema/validator"
	"github.com/hashicorp/terraform-plugin-framework/types"
	"github.com/hashicorp/terraform-plugin-framework/types/basetypes"

	"github.com/openaml/terraform-provider-aml/internal/engine"
)

// NewRemoteComputeResource is the aml_remote_compute factory.
func NewRemoteComputeResource() resource.Resource {
	return &sshTargetResource[RemoteComputeResourceModel, *RemoteComputeResourceModel]{
		typeSuffix: "_remote_compute",
		schema: func(ctx context.Context) schema.Schema {
			return sshTargetSchema(ctx, "Attaches an existing machine reachable over SSH as a compute target (Azure ML's `RemoteCompute`). "+
				"Apply connects (verifying the host key, or pinning the first one seen), stages the provider's own binary under `remote_root` as the run agent, "+
				"and probes the host. Runs sent there with `compute_target = <name>` execute detached on the host and survive lost connections.", nil)
		},
		importExample: "0f8fad5b-d9cb-469f-a165-70867728950e/targets/attach-dsvm",
	}
}

// RemoteComputeResourceModel is aml_remote_compute's state.
type RemoteComputeResourceModel struct {
	ID                   types.String `tfsdk:"id"`
	WorkspaceID          types.String `tfsdk:"workspace_id"`
	Name                 types.String `tfsdk:"name"`
	Address              types.String `tfsdk:"address"`
	SSHPort              types.Int64  `tfsdk:"ssh_port"`
	Username             types.String `tfsdk:"username"`
	Password             types.String `tfsdk:"password"`
	PrivateKey           types.String `tfsdk:"private_key"`
	PrivateKeyPassphrase types.String `tfsdk:"private_key_passphrase"`
	// Write-only alternatives (Terraform 1.11+): in the configuration only,
	// never in plan or state; a change of *_version re-attaches with the new one.
	PasswordWO                    types.String   `tfsdk:"password_wo"`
	PasswordWOVersion             types.Int64    `tfsdk:"password_wo_version"`
	PrivateKeyWO                  types.String   `tfsdk:"private_key_wo"`
	PrivateKeyWOVersion           types.Int64    `tfsdk:"private_key_wo_version"`
	PrivateKeyPassphraseWO        types.String   `tfsdk:"private_key_passphrase_wo"`
	PrivateKeyPassphraseWOVersion types.Int64    `tfsdk:"private_key_passphrase_wo_version"`
	UseAgent                      types.Bool     `tfsdk:"use_agent"`
	HostKey                       types.String   `tfsdk:"host_key"`
	InsecureIgnoreHostKey         types.Bool     `tfsdk:"insecure_ignore_host_key"`
	Bastion                       types.Object   `tfsdk:"bastion"`
	RemoteRoot                    types.String   `tfsdk:"remote_root"`
	ForceDetach                   types.Bool     `tfsdk:"force_detach"`
	Timeouts                      timeouts.Value `tfsdk:"timeouts"`

	OS                 types.String `tfsdk:"os"`
	Arch               types.String `tfsdk:"arch"`
	CPUCount           types.Int64  `tfsdk:"cpu_count"`
	MemoryMB           types.Int64  `tfsdk:"memory_mb"`
	GPUCount           types.Int64  `tfsdk:"gpu_count"`
	PythonVersions     types.List   `tfsdk:"python_versions"`
	DockerAvailable    types.Bool   `tfsdk:"docker_available"`
	DockerVersion      types.String `tfsdk:"docker_version"`
	DockerProblem      types.String `tfsdk:"docker_problem"`
	HostKeyFingerprint types.String `tfsdk:"host_key_fingerprint"`
	ProvisioningState  types.String `tfsdk:"provisioning_state"`
}

type bastionModel struct {
	Address              types.String `tfsdk:"address"`
	SSHPort              types.Int64  `tfsdk:"ssh_port"`
	Username             types.String `tfsdk:"username"`
	Password             types.String `tfsdk:"password"`
	PrivateKey           types.String `tfsdk:"private_key"`
	PrivateKeyPassphrase types.String `tfsdk:"private_key_passphrase"`
	HostKey              types.String `tfsdk:"host_key"`
}

var bastionTypes = map[string]attr.Type{
	"address": types.StringType, "ssh_port": types.Int64Type, "username": types.StringType, "password": types.StringType,
	"private_key": types.StringType, "private_key_passphrase": types.StringType, "host_key": types.StringType,
}

// sshTargetSchema is the schema every compute target reached over SSH shares
// (aml_remote_compute, aml_hdinsight_attachment), with a kind's own attributes.
func sshTargetSchema(ctx context.Context, description string, extra map[string]schema.Attribute) schema.Schema {
	replace := []planmodifier.String{stringplanmodifier.RequiresReplace()}
	computedStr := func(desc string) schema.StringAttribute {
		return schema.StringAttribute{Computed: true, MarkdownDescription: desc, PlanModifiers: []planmodifier.String{stringplanmodifier.UseStateForUnknown()}}
	}
	computedInt := func(desc string) schema.Int64Attribute {
		return schema.Int64Attribute{Computed: true, MarkdownDescription: desc, PlanModifiers: []planmodifier.Int64{int64planmodifier.UseStateForUnknown()}}
	}
	sch := schema.Schema{
		MarkdownDescription: description,
		Attributes: map[string]schema.Attribute{
			"id": computedStr("`{workspace_id}/targets/{name}`."),
			"workspace_id": schema.StringAttribute{
				Required: true, PlanModifiers: replace, MarkdownDescription: "The `id` of the workspace.",
			},
			"name": schema.StringAttribute{
				Required: true, PlanModifiers: replace,
				MarkdownDescription: "Compute target name used in `compute_target`: 2 to 16 letters, digits or `-`, starting with a letter; not `local` or `amlcompute`.",
				Validators: []validator.String{
					stringvalidator.RegexMatches(engine.TargetNamePattern, "must be 2 to 16 letters, digits or '-', starting with a letter"),
					stringvalidator.NoneOfCaseInsensitive(engine.ReservedTargetNames...),
				},
			},
			"address": schema.StringAttribute{
				Required: true, PlanModifiers: replace, MarkdownDescription: "Host name or IP address.",
				Validators: []validator.String{stringvalidator.LengthAtLeast(1)},
			},
			"ssh_port": schema.Int64Attribute{
				Optional: true, Computed: true, Default: int64default.StaticInt64(22),
				PlanModifiers:       []planmodifier.Int64{int64planmodifier.RequiresReplace()},
				Validators:          []validator.Int64{int64validator.Between(1, 65535)},
				MarkdownDescription: "SSH port. Default 22.",
			},
			"username": schema.StringAttribute{
				Required: true, PlanModifiers: replace, MarkdownDescription: "User to log in as; runs execute as this user.",
				Validators: []validator.String{stringvalidator.LengthAtLeast(1)},
			},
			"password": schema.StringAttribute{
				Optional: true, Sensitive: true, PlanModifiers: replace,
				MarkdownDescription: "Password (also answers keyboard-interactive prompts). Kept in the workspace with mode 0600 for later refreshes; never logged.",
			},
			"private_key": schema.StringAttribute{
				Optional: true, Sensitive: true, PlanModifiers: replace,
				MarkdownDescription: "Private key in PEM or OpenSSH format, e.g. `file(\"~/.ssh/id_ed25519\")`.",
			},
			"private_key_passphrase": schema.StringAttribute{
				Optional: true, Sensitive: true, PlanModifiers: replace,
				MarkdownDescription: "Passphrase of an encrypted `private_key`.",
				Validators:          []validator.String{stringvalidator.AlsoRequires(path.MatchRoot("private_key"))},
			},
			"password_wo":                       writeOnly("password"),
			"password_wo_version":               woVersion("password_wo"),
			"private_key_wo":                    writeOnly("private_key"),
			"private_key_wo_version":            woVersion("private_key_wo"),
			"private_key_passphrase_wo":         writeOnly("private_key_passphrase"),
			"private_key_passphrase_wo_version": woVersion("private_key_passphrase_wo"),
			"use_agent": schema.BoolAttribute{
				Optional: true, Computed: true, Default: booldefault.StaticBool(false),
				PlanModifiers:       []planmodifier.Bool{boolplanmodifier.RequiresReplace()},
				MarkdownDescription: "Also offer the keys of the SSH agent at `SSH_AUTH_SOCK`.",
			},
			"host_key": schema.StringAttribute{
				Optional: true, Computed: true,
				PlanModifiers:       []planmodifier.String{stringplanmodifier.UseStateForUnknown(), stringplanmodifier.RequiresReplaceIfConfigured()},
				MarkdownDescription: "The host's public key (`ssh-ed25519 AAAA...`, as in `known_hosts` without the host name). Without it the first key seen is pinned here; a later change of key is refused with both fingerprints.",
			},
			"insecure_ignore_host_key": schema.BoolAttribute{
				Optional: true, Computed: true, Default: booldefault.StaticBool(false),
				PlanModifiers:       []planmodifier.Bool{boolplanmodifier.RequiresReplace()},
				MarkdownDescription: "Skip host key verification. Only for throwaway hosts: it allows a man in the middle.",
			},
			"remote_root": schema.StringAttribute{
				Optional: true, Computed: true,
				PlanModifiers:       []planmodifier.String{stringplanmodifier.UseStateForUnknown(), stringplanmodifier.RequiresReplaceIfConfigured()},
				MarkdownDescription: "Absolute directory on the host for the agent, blobs, environments and runs. Default `$HOME/.aml`. Detaching never deletes anything outside it (nor inside it).",
			},
			"force_detach": schema.BoolAttribute{
				Optional: true, Computed: true, Default: booldefault.StaticBool(false),
				MarkdownDescription: "Destroying the attachment fails while runs are active on it; with `true` they are canceled first.",
			},
			"timeouts": timeouts.Attributes(ctx, timeouts.Opts{Create: true, Delete: true,
				CreateDescription: "How long attaching may take: connecting, staging the agent, probing (default 10m).",
				DeleteDescription: "How long detaching may take, including canceling active runs with force_detach (default 10m)."}),
			"os":                   computedStr("Operating system (`linux`)."),
			"arch":                 computedStr("CPU architecture (`amd64`, `arm64`)."),
			"cpu_count":            computedInt("Logical CPUs."),
			"memory_mb":            computedInt("Memory in MiB."),
			"gpu_count":            computedInt("GPUs reported by `nvidia-smi -L` (0 without it)."),
			"python_versions":      schema.ListAttribute{ElementType: types.StringType, Computed: true, PlanModifiers: []planmodifier.List{listplanmodifier.UseStateForUnknown()}, MarkdownDescription: "Python versions found on the host's `PATH`."},
			"docker_available":     schema.BoolAttribute{Computed: true, PlanModifiers: []planmodifier.Bool{boolplanmodifier.UseStateForUnknown()}, MarkdownDescription: "Whether a Docker engine answers on the host for the attaching user (`DOCKER_HOST` of the login environment, else the default socket)."},
			"docker_version":       schema.StringAttribute{Computed: true, PlanModifiers: []planmodifier.String{stringplanmodifier.UseStateForUnknown()}, MarkdownDescription: "The host's Docker engine version; empty without one (`docker_problem` says why)."},
			"docker_problem":       schema.StringAttribute{Computed: true, PlanModifiers: []planmodifier.String{stringplanmodifier.UseStateForUnknown()}, MarkdownDescription: "Why Docker cannot be used on the host (no client, no engine answering, or the user may not use it); empty when it can."},
			"host_key_fingerprint": computedStr("The host key's fingerprint, `SHA256:...` as `ssh-keygen -lf` prints it."),
			"provisioning_state":   computedStr("`Succeeded` once attached."),
		},
		Blocks: map[string]schema.Block{
			"bastion": sshHostBlock("A jump host to reach `address` through.", "Bastion host", "Bastion user"),
		},
	}
	for k, v := range extra {
		sch.Attributes[k] = v
	}
	return sch
}

// writeOnly is the Terraform 1.11 write-only alternative of a secret attribute.
func writeOnly(of string) schema.StringAttribute {
	return schema.StringAttribute{
		Optional: true, Sensitive: true, WriteOnly: true,
		Validators: []validator.String{stringvalidator.ConflictsWith(path.MatchRoot(of))},
		MarkdownDescription: "Write-only `" + of + "` (Terraform 1.11 or later): read from the configuration at attach and never stored in plan or state. " +
			"The workspace still keeps it (mode 0600) for later refreshes. Changing it takes effect when `" + of + "_wo_version` changes.",
	}
}

func woVersion(of string) schema.Int64Attribute {
	return schema.Int64Attribute{
		Optional: true, PlanModifiers: []planmodifier.Int64{int64planmodifier.RequiresReplace()},
		Validators:          []validator.Int64{int64validator.AlsoRequires(path.MatchRoot(of))},
		MarkdownDescription: "Any value; change it to re-attach with a new `" + of + "` (write-only values are not compared between plans).",
	}
}

func (r *sshTargetResource[M, P]) ConfigValidators(ctx context.Context) []resource.ConfigValidator {
	return []resource.ConfigValidator{
		resourcevalidator.AtLeastOneOf(path.MatchRoot("password"), path.MatchRoot("private_key"), path.MatchRoot("use_agent"),
			path.MatchRoot("password_wo"), path.MatchRoot("private_key_wo")),
		resourcevalidator.Conflicting(path.MatchRoot("host_key"), path.MatchRoot("insecure_ignore_host_key")),
	}
}

func (m *RemoteComputeResourceModel) spec(ctx context.Context, diags *diag.Diagnostics) (engine.RemoteSpec, engine.Credentials) {
	spec := engine.RemoteSpec{
		Name: m.Name.ValueString(), Address: m.Address.ValueString(), Port: int(m.SSHPort.ValueInt64()),
		Username: m.Username.ValueString(), UseAgent: m.UseAgent.ValueBool(), HostKey: m.HostKey.ValueString(),
		InsecureIgnoreHostKey: m.InsecureIgnoreHostKey.ValueBool(), RemoteRoot: m.RemoteRoot.ValueString(),
	}
	if m.HostKey.IsUnknown() {
		spec.HostKey = ""
	}
	if m.RemoteRoot.IsUnknown() {
		spec.RemoteRoot = ""
	}
	creds := engine.Credentials{Password: m.Password.ValueString(), PrivateKey: m.PrivateKey.ValueString(), Passphrase: m.PrivateKeyPassphrase.ValueString()}
	if !m.Bastion.IsNull() && !m.Bastion.IsUnknown() {
		var b bastionModel
		diags.Append(m.Bastion.As(ctx, &b, basetypes.ObjectAsOptions{})...)
		port := int(b.SSHPort.ValueInt64())
		if port == 0 {
			port = 22
		}
		spec.Bastion = &engine.RemoteSpec{Address: b.Address.ValueString(), Port: port, Username: b.Username.ValueString(), HostKey: b.HostKey.ValueString()}
		creds.Bastion = &engine.Credentials{Password: b.Password.ValueString(), PrivateKey: b.PrivateKey.ValueString(), Passphrase: b.PrivateKeyPassphrase.ValueString()}
	}
	return spec, creds
}

func (m *RemoteComputeResourceModel) fill(ctx context.Context, t *engine.Target, diags *diag.Diagnostics) {
	var spec engine.RemoteSpec
	var st engine.RemoteState
	if err := t.Decode(&spec, &st); err != nil {
		diags.AddError("Cannot read compute target", err.Error())
		return
	}
	m.ID = types.StringValue(t.ID)
	m.WorkspaceID = types.StringValue(t.WorkspaceID)
	m.Name = types.StringValue(t.Name)
	m.Address = types.StringValue(spec.Address)
	m.SSHPort = types.Int64Value(int64(spec.Port))
	m.Username = types.StringValue(spec.Username)
	m.UseAgent = types.BoolValue(spec.UseAgent)
	m.InsecureIgnoreHostKey = types.BoolValue(spec.InsecureIgnoreHostKey)
	m.HostKey = types.StringValue(st.HostKey)
	m.RemoteRoot = types.StringValue(st.RemoteRoot)
	m.OS = types.StringValue(t.Facts.OS)
	m.Arch = types.StringValue(t.Facts.Arch)
	m.CPUCount = types.Int64Value(int64(t.Facts.Cores))
	m.MemoryMB = types.Int64Value(t.Facts.MemoryBytes / (1 << 20))
	m.GPUCount = types.Int64Value(int64(t.Facts.GPUs))
	m.PythonVersions = listValue(ctx, t.Facts.PythonVersions, diags)
	m.DockerAvailable = types.BoolValue(t.Facts.Docker)
	m.DockerVersion = types.StringValue(t.Facts.DockerVersion)
	m.DockerProblem = types.StringValue(t.Facts.DockerProblem)
	m.HostKeyFingerprint = types.StringValue(st.Fingerprint)
	m.ProvisioningState = types.StringValue(t.ProvisioningState)
}

// sshHostBlock is a block naming another SSH host and its credentials (a
// bastion, a Slurm login node): the attributes of bastionModel.
func sshHostBlock(description, address, username string) schema.SingleNestedBlock {
	return schema.SingleNestedBlock{
		PlanModifiers:       []planmodifier.Object{objectplanmodifier.RequiresReplace()},
		MarkdownDescription: description,
		Validators:          []validator.Object{objectvalidator.AlsoRequires(path.MatchRelative().AtName("address"), path.MatchRelative().AtName("username"))},
		Attributes: map[string]schema.Attribute{
			"address":                schema.StringAttribute{Optional: true, MarkdownDescription: address + " (required in the block)."},
			"ssh_port":               schema.Int64Attribute{Optional: true, MarkdownDescription: "SSH port. Default 22.", Validators: []validator.Int64{int64validator.Between(1, 65535)}},
			"username":               schema.StringAttribute{Optional: true, MarkdownDescription: username + " (required in the block)."},
			"password":               schema.StringAttribute{Optional: true, Sensitive: true, MarkdownDescription: "Password."},
			"private_key":            schema.StringAttribute{Optional: true, Sensitive: true, MarkdownDescription: "Private key (PEM or OpenSSH)."},
			"private_key_passphrase": schema.StringAttribute{Optional: true, Sensitive: true, MarkdownDescription: "Passphrase of an encrypted `private_key`."},
			"host_key":               schema.StringAttribute{Optional: true, MarkdownDescription: "Its host key; without it the first key seen is pinned."},
		},
	}
}

// sshHostValue is the block value of another SSH host, from its spec and
// stored credentials (import).
func sshHostValue(ctx context.Context, h *engine.RemoteSpec, c *engine.Credentials, diags *diag.Diagnostics) types.Object {
	bc := engine.Credentials{}
	if c != nil {
		bc = *c
	}
	port := types.Int64Null()
	if h.Port != 22 {
		port = types.Int64Value(int64(h.Port))
	}
	v, d := types.ObjectValueFrom(ctx, bastionTypes, bastionModel{
		Address: types.StringValue(h.Address), SSHPort: port, Username: types.StringValue(h.Username),
		Password: optString(bc.Password), PrivateKey: optString(bc.PrivateKey), PrivateKeyPassphrase: optString(bc.Passphrase), HostKey: optString(h.HostKey),
	})
	diags.Append(d...)
	return v
}
