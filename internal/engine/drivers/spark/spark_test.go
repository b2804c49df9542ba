package spark

import (
	"context"
	"os"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/openaml/terraform-provider-aml/internal/engine/drivers"
	"github.com/openaml/terraform-provider-aml/internal/engine/drivers/driverstest"
	"github.com/openaml/terraform-provider-aml/internal/engine/drivers/sshhost"
	"github.com/openaml/terraform-provider-aml/internal/engine/env"
	"github.com/openaml/terraform-provider-aml/internal/engine/field"
	"github.com/openaml/terraform-provider-aml/internal/engine/remote"
	"github.com/openaml/terraform-provider-aml/internal/engine/run"
	"github.com/openaml/terraform-provider-aml/internal/engine/snapshot"
	"github.com/openaml/terraform-provider-aml/internal/testutil"
	sparktest "github.com/openaml/terraform-provider-aml/internal/testutil/spark"
	"github.com/openaml/terraform-provider-aml/internal/testutil/sshd"
)

func TestMain(m *testing.M) { testutil.Main(m, nil) }

func TestCheckSpec(t *testing.T) {
	for _, ok := range [][2]string{{"yarn", "client"}, {"yarn", "cluster"}, {"local", "client"}, {"local[2]", "client"}, {"local[*]", "client"},
		{"local[4,2]", "client"}, {"spark://head:7077", "client"}, {"spark://a:7077,b:7077", "client"}, {"k8s://https://api:6443", "cluster"}} {
		if err := CheckSpec(ok[0], ok[1]); err != nil {
			t.Errorf("%v: %v", ok, err)
		}
	}
	for _, bad := range []struct{ master, mode, attr string }{
		{"mesos://x:5050", "client", "spark_master"}, {"local[0]", "client", "spark_master"}, {"http://x", "client", "spark_master"},
		{"local[2]", "cluster", "deploy_mode"}, {"spark://h:7077", "cluster", "deploy_mode"}, {"yarn", "server", "deploy_mode"},
	} {
		err := CheckSpec(bad.master, bad.mode)
		fe, ok := err.(*field.Error)
		if !ok || fe.Attr != bad.attr {
			t.Errorf("%s/%s: %v, want an error on %s", bad.master, bad.mode, err, bad.attr)
		}
	}
}

func TestArgv(t *testing.T) {
	got := Argv("/opt/spark/bin/spark-submit", "yarn", "client", "iris/iris_1_ab", "/h/.aml/runs/iris_1_ab",
		map[string]string{"spark.executor.memory": "1g", "spark.yarn.maxAppAttempts": "2"}, "train.py", []string{"--C", "1"})
	want := []string{"/opt/spark/bin/spark-submit", "--master", "yarn", "--deploy-mode", "client", "--name", "iris/iris_1_ab",
		"--conf", "spark.eventLog.dir=file:///h/.aml/runs/iris_1_ab/logs/spark-events", "--conf", "spark.eventLog.enabled=true",
		"--conf", "spark.executor.memory=1g", "--conf", "spark.yarn.maxAppAttempts=2", "train.py", "--C", "1"}
	if !slices.Equal(got, want) {
		t.Fatalf("Argv =\n%q\nwant\n%q", got, want)
	}
}

// YARN is not installable here: the kill path is checked against the command
// it runs.
func TestYarnKill(t *testing.T) {
	if got := YarnKill("application_1700000000000_0042"); got != "yarn application -kill application_1700000000000_0042" {
		t.Fatalf("YarnKill = %q", got)
	}
	for _, name := range []string{"application_1700000000000_0042.inprogress", "app-20261201101500-0000", "local-1796120295910"} {
		if !appIDPattern.MatchString(name) {
			t.Errorf("%s is not recognized as an application's event log", name)
		}
	}
}

// head starts a real sshd on 127.0.0.1 whose host is this machine, with the
// real Spark of scripts/install-spark.sh, and returns a driver for it.
func head(t *testing.T, master string, opts sshd.Options) (func(t *testing.T) drivers.Driver, snapshot.BlobStore, sparktest.Install) {
	t.Helper()
	in := sparktest.Find(t)
	srv := sshd.Start(t, opts)
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	blobs := snapshot.BlobStore{Root: t.TempDir()}
	runs := t.TempDir()
	spec := Spec{Spec: sshhost.Spec{Name: "hdi", Address: "127.0.0.1", Port: srv.Port, Username: srv.User}, SparkHome: in.Home, Master: master, DeployMode: "client"}
	host := func() *sshhost.Driver {
		pool := remote.NewPool()
		t.Cleanup(pool.Close)
		return &sshhost.Driver{Pool: pool, Endpoint: srv.Endpoint(), Root: srv.Home + "/.aml", LocalRunsRoot: runs, Blobs: blobs, AgentPath: exe}
	}
	var st State
	if err := probeSpark(context.Background(), host(), spec, &st); err != nil {
		t.Fatalf("probing Spark: %v", err)
	}
	if st.SparkVersion == "" || st.ScalaVersion == "" || st.JavaVersion == "" || !strings.HasSuffix(st.SparkSubmit, "/bin/spark-submit") {
		t.Fatalf("probe found %+v", st)
	}
	return func(t *testing.T) drivers.Driver { return &Driver{Host: host(), Spec: spec, State: st} }, blobs, in
}

// The conformance suite through spark-submit on local[2]: every case's script
// is a Spark application's driver.
func TestConformance(t *testing.T) {
	open, blobs, in := head(t, "local[2]", sshd.Options{})
	driverstest.Run(t, driverstest.Target{
		Open:   open,
		Blobs:  blobs,
		Launch: env.Launch{Interpreter: in.Python},
		Env:    map[string]string{"SPARK_LOCAL_IP": "127.0.0.1"},
		Wait:   120 * 1e9,
	})
}

// No Spark where it is looked for: the error says where it looked and the PATH.
func TestProbeWithoutSpark(t *testing.T) {
	srv := sshd.Start(t, sshd.Options{})
	exe, _ := os.Executable()
	pool := remote.NewPool()
	t.Cleanup(pool.Close)
	host := &sshhost.Driver{Pool: pool, Endpoint: srv.Endpoint(), Root: srv.Home + "/.aml", AgentPath: exe}
	for _, tc := range []struct{ home, attr, want string }{
		{"", "address", "looked in $SPARK_HOME/bin and the login PATH"},
		{"/nowhere/spark", "spark_home", "looked in /nowhere/spark/bin, $SPARK_HOME/bin and the login PATH"},
	} {
		var st State
		err := probeSpark(context.Background(), host, Spec{Spec: sshhost.Spec{Username: srv.User}, SparkHome: tc.home}, &st)
		fe, ok := err.(*field.Error)
		if !ok || fe.Attr != tc.attr || !strings.Contains(fe.Msg, "spark-submit not found on") || !strings.Contains(fe.Msg, tc.want) || !strings.Contains(fe.Msg, "PATH=") {
			t.Errorf("spark_home %q: %v", tc.home, err)
		}
	}
}

// The SSH link lost while the driver runs: the run goes on on the head node and
// is waited for and collected once the link is back.
func TestLinkLostWhileDriverRuns(t *testing.T) {
	in := sparktest.Find(t)
	srv := sshd.Start(t, sshd.Options{})
	exe, _ := os.Executable()
	blobs := snapshot.BlobStore{Root: t.TempDir()}
	pool := remote.NewPool()
	t.Cleanup(pool.Close)
	host := &sshhost.Driver{Pool: pool, Endpoint: srv.Endpoint(), Root: srv.Home + "/.aml", LocalRunsRoot: t.TempDir(), Blobs: blobs, AgentPath: exe}
	spec := Spec{Spec: sshhost.Spec{Name: "hdi", Username: srv.User}, SparkHome: in.Home, Master: "local[1]", DeployMode: "client"}
	var st State
	if err := probeSpark(context.Background(), host, spec, &st); err != nil {
		t.Fatal(err)
	}
	d := &Driver{Host: host, Spec: spec, State: st}
	src := t.TempDir()
	testutil.WriteFiles(t, src, map[string]string{"train.py": `import time, aml_run
from pyspark.sql import SparkSession
spark = SparkSession.builder.getOrCreate()
time.sleep(4)
aml_run.log("rows", spark.range(100).count())
`})
	ctx := context.Background()
	m, err := snapshot.Build(ctx, src, snapshot.Options{})
	if err != nil {
		t.Fatal(err)
	}
	if err := blobs.Ingest(ctx, src, m); err != nil {
		t.Fatal(err)
	}
	h, err := d.Start(ctx, drivers.RunSpec{RunID: "link_1", Manifest: m, Blobs: blobs, Program: drivers.Program{Script: "train.py"},
		Launch: env.Launch{Interpreter: in.Python}, Env: map[string]string{"SPARK_LOCAL_IP": "127.0.0.1"}, Experiment: "link", Framework: "PySpark", Grace: 2e9})
	if err != nil {
		t.Fatal(err)
	}
	ex, err := d.Recover(ctx, h)
	if err != nil {
		t.Fatal(err)
	}
	time.Sleep(time.Second)
	if n := srv.DropConnections(); n == 0 {
		t.Fatal("no SSH connection to drop")
	}
	wctx, cancel := context.WithTimeout(ctx, 120*time.Second)
	defer cancel()
	got, err := ex.Wait(wctx)
	if err != nil || got.Status != run.Completed || !strings.HasPrefix(got.Details[DetailAppID], "local-") {
		t.Fatalf("after the link was lost: %+v, %v", got, err)
	}
	col, err := ex.Collect(ctx)
	if err != nil || run.LastValues(col.Metrics)["rows"] != 100 {
		t.Fatalf("collected %+v, %v", col.Metrics, err)
	}
}

// Executors elsewhere would run another Python than a system-managed
// environment built on the head node: refused, naming the attribute.
func TestSystemManagedRefusedWithRemoteExecutors(t *testing.T) {
	for _, master := range []string{"yarn", "spark://head:7077"} {
		d := &Driver{Spec: Spec{Master: master}}
		_, err := d.PrepareEnvironment(context.Background(), env.Environment{Python: &env.Python{Conda: &env.CondaDependencies{PipPackages: []string{"numpy"}}}})
		fe, ok := err.(*field.Error)
		if !ok || fe.Attr != "environment.python.user_managed_dependencies" || !strings.Contains(fe.Msg, "another Python") {
			t.Errorf("master %s: %v", master, err)
		}
	}
	d := &Driver{Spec: Spec{Master: "yarn"}}
	if _, err := d.PrepareEnvironment(context.Background(), env.Environment{Docker: &env.Docker{Enabled: true, BaseImage: "x"}}); err == nil {
		t.Error("Docker accepted on a Spark target")
	}
}
