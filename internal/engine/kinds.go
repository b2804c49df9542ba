package engine

// Every compute target kind of this build registers itself in its package's
// init; this block is the one place that links them in. A new kind adds its
// import here (and, when the provider configures it, an alias of its spec
// type below).
import (
	_ "github.com/openaml/terraform-provider-aml/internal/engine/drivers/local"

	"github.com/openaml/terraform-provider-aml/internal/engine/drivers/pool"
	"github.com/openaml/terraform-provider-aml/internal/engine/drivers/slurm"
	"github.com/openaml/terraform-provider-aml/internal/engine/drivers/spark"
	"github.com/openaml/terraform-provider-aml/internal/engine/drivers/ssh"
	"github.com/openaml/terraform-provider-aml/internal/engine/drivers/sshhost"
)

// The kinds' configuration types, as the provider fills them.
type (
	// RemoteSpec is an SSH host as configured (aml_remote_compute), secrets apart.
	RemoteSpec = ssh.Spec
	// Credentials are an SSH host's secrets.
	Credentials = ssh.Credentials
	// RemoteState is what attaching an SSH host learned (host key, facts, remote_root).
	RemoteState = ssh.State
	// ComputeSpec is an aml_compute as configured.
	ComputeSpec = pool.Spec
	// SparkSpec is an aml_hdinsight_attachment as configured, and SparkState
	// what attaching it learned.
	SparkSpec  = spark.Spec
	SparkState = spark.State
	// BatchSpec is an aml_batch_attachment as configured, BatchState what
	// attaching it learned, and SlurmResources a run configuration's slurm block.
	BatchSpec      = slurm.Spec
	BatchState     = slurm.State
	SlurmResources = slurm.Resources
)

// Slurm settings and details.
var (
	CheckSlurmResources = slurm.CheckResources
	DetailSlurmJobID    = slurm.DetailJobID
)

// Spark settings, for the provider's schema and plan-time checks.
var (
	CheckSparkSpec     = spark.CheckSpec
	SparkDeployModes   = spark.DeployModes
	SparkMasterForms   = spark.MasterForms
	DefaultSparkMaster = spark.DefaultMaster
	DefaultDeployMode  = spark.DefaultDeployMode
	DetailSparkAppID   = spark.DetailAppID
)

// DefaultCollectMaxBytes bounds what a remote run brings back by default.
const DefaultCollectMaxBytes = sshhost.DefaultCollectMaxBytes

// Kind names, as recorded in the workspace.
const (
	KindSSH   = ssh.Name
	KindPool  = pool.Kind
	KindSpark = spark.Name
	KindBatch = slurm.Name
)
