package provider

import (
	"context"

	"github.com/hashicorp/terraform-plugin-framework-validators/stringvalidator"
	"github.com/hashicorp/terraform-plugin-framework/diag"
	"github.com/hashicorp/terraform-plugin-framework/path"
	"github.com/hashicorp/terraform-plugin-framework/resource"
	"github.com/hashicorp/terraform-plugin-framework/resource/schema"
	"github.com/hashicorp/terraform-plugin-framework/resource/schema/planmodifier"
	"github.com/hashicorp/terraform-plugin-framework/resource/schema/stringdefault"
	"github.com/hashicorp/terraform-plugin-framework/resource/schema/stringplanmodifier"
	"github.com/hashicorp/terraform-plugin-framework/schema/validator"
	"github.com/hashicorp/terraform-plugin-framework/types"

	"github.com/openaml/terraform-provider-aml/internal/engine"
)

// HDInsightAttachmentResourceModel is aml_hdinsight_attachment's state: an
// SSH head node (as aml_remote_compute) and its Spark.
type HDInsightAttachmentResourceModel struct {
	RemoteComputeResourceModel
	SparkHome     types.String `tfsdk:"spark_home"`
	SparkMaster   types.String `tfsdk:"spark_master"`
	DeployMode    types.String `tfsdk:"deploy_mode"`
	SparkVersion  types.String `tfsdk:"spark_version"`
	ScalaVersion  types.String `tfsdk:"scala_version"`
	JavaVersion   types.String `tfsdk:"java_version"`
	HadoopVersion types.String `tfsdk:"hadoop_version"`
}

// NewHDInsightAttachmentResource is the aml_hdinsight_attachment factory.
func NewHDInsightAttachmentResource() resource.Resource {
	return &sshTargetResource[HDInsightAttachmentResourceModel, *HDInsightAttachmentResourceModel]{
		typeSuffix:    "_hdinsight_attachment",
		schema:        hdinsightSchema,
		importExample: "0f8fad5b-d9cb-469f-a165-70867728950e/targets/myhdi",
	}
}

func hdinsightSchema(ctx context.Context) schema.Schema {
	replace := []planmodifier.String{stringplanmodifier.RequiresReplace()}
	computed := func(desc string) schema.StringAttribute {
		return schema.StringAttribute{Computed: true, MarkdownDescription: desc, PlanModifiers: []planmodifier.String{stringplanmodifier.UseStateForUnknown()}}
	}
	return sshTargetSchema(ctx, "Attaches a Spark cluster by its head node (Azure ML's `HDInsightCompute`): a YARN edge node, a standalone master, or one big machine running `local[*]`, "+
		"reached over SSH as `aml_remote_compute` is. Apply connects, stages the agent, finds `spark-submit` (in `spark_home`, then `$SPARK_HOME`, then the login `PATH`) and reads its versions. "+
		"Runs whose run configuration has `framework = \"PySpark\"` are submitted there with `spark-submit` (`--master`, `--deploy-mode`, `--name <experiment>/<run_id>`, "+
		"`spark.yarn.maxAppAttempts=1`, the run configuration's `spark` block), supervised on the head node like any run, and their `spark_application_id` is kept.",
		map[string]schema.Attribute{
			"spark_home": schema.StringAttribute{
				Optional: true, PlanModifiers: replace,
				MarkdownDescription: "Absolute Spark directory on the head node (holding `bin/spark-submit`). Default: `$SPARK_HOME`, else `spark-submit` on the login `PATH`.",
			},
			"spark_master": schema.StringAttribute{
				Optional: true, Computed: true, Default: stringdefault.StaticString(engine.DefaultSparkMaster), PlanModifiers: replace,
				MarkdownDescription: "spark-submit's `--master`: " + engine.SparkMasterForms + ". Default `yarn`. With a master whose executors run on other machines, " +
					"runs must use a user-managed environment whose interpreter exists on every node (system-managed ones are built on the head node only and are refused).",
			},
			"deploy_mode": schema.StringAttribute{
				Optional: true, Computed: true, Default: stringdefault.StaticString(engine.DefaultDeployMode), PlanModifiers: replace,
				MarkdownDescription: "`client` (default: the driver runs on the head node) or `cluster` (YARN and Kubernetes only; Spark runs no Python application in cluster mode on a standalone master).",
				Validators:          []validator.String{stringvalidator.OneOf(engine.SparkDeployModes...)},
			},
			"spark_version":  computed("Spark version `spark-submit --version` reports."),
			"scala_version":  computed("Scala version Spark was built with."),
			"java_version":   computed("Java version Spark runs on."),
			"hadoop_version": computed("Hadoop client version shipped with Spark, where it says (empty otherwise)."),
		})
}

// ValidateConfig checks spark_master and deploy_mode together at plan time.
func (r *sshTargetResource[M, P]) ValidateConfig(ctx context.Context, req resource.ValidateConfigRequest, resp *resource.ValidateConfigResponse) {
	var master, mode types.String
	if d := req.Config.GetAttribute(ctx, path.Root("spark_master"), &master); d.HasError() {
		return // not a Spark target
	}
	req.Config.GetAttribute(ctx, path.Root("deploy_mode"), &mode)
	if master.IsUnknown() || mode.IsUnknown() {
		return
	}
	m, d := master.ValueString(), mode.ValueString()
	if master.IsNull() {
		m = engine.DefaultSparkMaster
	}
	if mode.IsNull() {
		d = engine.DefaultDeployMode
	}
	if err := engine.CheckSparkSpec(m, d); err != nil {
		addEngineError(&resp.Diagnostics, "Invalid Spark settings", err)
	}
}

func (m *HDInsightAttachmentResourceModel) host() *RemoteComputeResourceModel {
	return &m.RemoteComputeResourceModel
}

func (m *HDInsightAttachmentResourceModel) attach(ctx context.Context, eng *engine.Engine, spec engine.RemoteSpec, creds engine.Credentials, diags *diag.Diagnostics) (*engine.Target, error) {
	s := engine.SparkSpec{Spec: spec, SparkHome: m.SparkHome.ValueString(), Master: m.SparkMaster.ValueString(), DeployMode: m.DeployMode.ValueString()}
	return eng.AttachTarget(ctx, m.WorkspaceID.ValueString(), engine.KindSpark, spec.Name, s, creds)
}

func (m *HDInsightAttachmentResourceModel) fillKind(ctx context.Context, t *engine.Target, imported bool, diags *diag.Diagnostics) {
	var spec engine.SparkSpec
	var st engine.SparkState
	if err := t.Decode(&spec, &st); err != nil {
		diags.AddError("Cannot read compute target", err.Error())
		return
	}
	if imported || !m.SparkHome.IsNull() {
		m.SparkHome = optString(spec.SparkHome)
	}
	m.SparkMaster, m.DeployMode = types.StringValue(spec.Master), types.StringValue(spec.DeployMode)
	m.SparkVersion, m.ScalaVersion = types.StringValue(st.SparkVersion), types.StringValue(st.ScalaVersion)
	m.JavaVersion, m.HadoopVersion = types.StringValue(st.JavaVersion), types.StringValue(st.HadoopVersion)
}

var _ resource.ResourceWithValidateConfig = &sshTargetResource[HDInsightAttachmentResourceModel, *HDInsightAttachmentResourceModel]{}
