//! Command-line definitions.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};
use deepdist_core::model::Activation;

mod bench_args;
mod launch_args;
mod model_args;
pub use bench_args::{
    BenchArgs, BenchExperiment, DbnBenchArgs, DelaysBenchArgs, HogwildBenchArgs, ModesBenchArgs, PsBenchArgs,
    ScalingBenchArgs, SimCheckBenchArgs,
};
pub use launch_args::LaunchArgs;
pub use model_args::{EvalArgs, FormatArg, PredictArgs};

/// Train deep networks (MLPs, Deep Belief Networks) on every core, and across
/// machines through a parameter server.
#[derive(Debug, Parser)]
#[command(name = "deepdist", version, about, long_about = None)]
pub struct Cli {
    /// Log filter for operators (overridden by RUST_LOG), e.g. `info` or `deepdist_core=debug`.
    #[arg(long, global = true, default_value = "warn")]
    pub log: String,

    #[command(subcommand)]
    pub command: Command,
}

/// What to do.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Datasets: fetch and verify MNIST.
    #[command(subcommand)]
    Data(DataCommand),
    /// Measure gradient() throughput and this machine's GEMM peak (use a release build).
    Bench(BenchArgs),
    /// Train an MLP on MNIST in this process, on every core (no driver, no network).
    Train(TrainArgs),
    /// Run a driver: executors and clients connect to it; it runs submitted jobs.
    Driver(DriverArgs),
    /// Run an executor: connect to a driver and compute gradients on this machine's cores.
    Executor(ExecutorArgs),
    /// Submit a job file to a running driver.
    Submit(SubmitArgs),
    /// Show a driver's executors and jobs.
    Status(DriverAddr),
    /// Cancel a queued or running job.
    Cancel(CancelArgs),
    /// Run a driver and executors in this process, submit a job, show its progress.
    Local(LocalArgs),
    /// Run a job on a cluster: every rank of srun, sbatch, mpirun or a
    /// Kubernetes Indexed Job runs this and takes its role from the
    /// environment; with --hosts, over ssh; otherwise as `local`.
    Launch(LaunchArgs),
    /// Score a saved model: accuracy, loss, per-class accuracy, confusion matrix.
    Eval(EvalArgs),
    /// Predict with a saved model: class and class probabilities per example, as CSV.
    Predict(PredictArgs),
}

/// The driver to talk to.
#[derive(Debug, Args)]
pub struct DriverAddr {
    /// The driver's address.
    #[arg(
        long,
        env = "DEEPDIST_DRIVER",
        default_value = "127.0.0.1:7077",
        value_name = "HOST:PORT"
    )]
    pub driver: String,
    #[command(flatten)]
    pub secret: SecretArg,
    /// PEM file of the CA that signed the driver's TLS certificate; turns TLS on.
    #[arg(long, value_name = "FILE")]
    pub tls_ca: Option<PathBuf>,
}

/// Shared-secret authentication between driver, executors and clients.
#[derive(Debug, Clone, Args)]
pub struct SecretArg {
    /// File holding the shared secret (at least 16 bytes) every peer must prove in the
    /// handshake (`-`: standard input). Default: $DEEPDIST_SECRET if set, else no
    /// authentication.
    #[arg(long, value_name = "FILE")]
    pub secret_file: Option<PathBuf>,
}

/// The driver's choice to listen beyond loopback without a secret or TLS.
#[derive(Debug, Clone, Args)]
pub struct PlaintextArg {
    /// Accept listening (and --http) on a non-loopback address without a
    /// shared secret, or with one but without TLS. Without a secret, anyone who
    /// reaches the port can submit jobs and join as an executor; without TLS,
    /// a secret authenticates only the start of each connection and anyone on
    /// the network path can read, inject or change frames afterwards.
    #[arg(long)]
    pub insecure_plaintext: bool,
}

/// The driver's TLS identity.
#[derive(Debug, Clone, Args)]
pub struct TlsServerArgs {
    /// PEM certificate chain of the driver; with --tls-key, every connection is TLS.
    #[arg(long, value_name = "FILE", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,
    /// PEM private key of the driver's certificate.
    #[arg(long, value_name = "FILE", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
}

/// Driver options.
#[derive(Debug, Clone, Args)]
pub struct DriverArgs {
    /// Address to listen on, for executors and clients.
    #[arg(long, default_value = "127.0.0.1:7077", value_name = "ADDR")]
    pub listen: String,
    #[command(flatten)]
    pub secret: SecretArg,
    #[command(flatten)]
    pub tls: TlsServerArgs,
    #[command(flatten)]
    pub plaintext: PlaintextArg,
    #[command(flatten)]
    pub run: DriverSettings,
    /// Resume the newest job checkpoint (`<runs-dir>/checkpoints/job-<id>.checkpoint`)
    /// after a crash; executors that reconnect carry it on.
    #[arg(long)]
    pub recover: bool,
    /// Longest seconds between checkpoints within an epoch; every completed
    /// epoch and stage is checkpointed too.
    #[arg(long, default_value_t = 60, value_name = "SECONDS")]
    pub checkpoint_interval_s: u64,
}

/// Driver settings shared by `driver`, `local` and the benchmarks: where it
/// reads data and writes outputs, heartbeats and leases, model limits.
#[derive(Debug, Clone, Args)]
pub struct DriverSettings {
    /// Directory for job outputs (`<dir>/<id>-<name>/metrics.jsonl`, `model.safetensors`).
    #[arg(long, default_value = "runs", value_name = "DIR")]
    pub runs_dir: PathBuf,
    /// Milliseconds between heartbeats with executors.
    #[arg(long, default_value_t = 1000)]
    pub heartbeat_ms: u64,
    /// Seconds of silence after which an executor is declared lost.
    #[arg(long, default_value_t = 10)]
    pub heartbeat_timeout_s: u64,
    /// Largest model a job may ask for, in MiB per copy of its parameters
    /// (default: the 8 copies a driver keeps fit in a quarter of this
    /// machine's memory); larger jobs are refused at submit.
    #[arg(long, value_name = "MIB")]
    pub max_model_mb: Option<u64>,
    /// Seconds an executor may hold a task without progress (heartbeats do
    /// not count) before the task goes to another executor and it is
    /// disconnected.
    #[arg(long, default_value_t = 60, value_name = "SECONDS")]
    pub task_lease_s: u64,
    /// Parameter-server threads the model's values are cut between, each
    /// with its own share of the optimizer's state (a cut falls between
    /// tensors, so a model gets at most as many shards as it allows).
    #[arg(long, default_value_t = 1, value_name = "S", value_parser = clap::value_parser!(u16).range(1..=256))]
    pub server_shards: u16,
    /// Serve the status and job metrics as JSON (`/api/status`,
    /// `/api/jobs/ID/metrics`) and Prometheus's `/metrics` over HTTP here,
    /// e.g. 127.0.0.1:4040 (beyond loopback: needs --secret-file, sent as a
    /// bearer token).
    #[arg(long, value_name = "HOST:PORT")]
    pub http: Option<String>,
    #[command(flatten)]
    pub data: DataDirArg,
}

/// Executor options.
#[derive(Debug, Args)]
pub struct ExecutorArgs {
    #[command(flatten)]
    pub driver: DriverAddr,
    /// Threads that compute gradients (default: every core).
    #[arg(long)]
    pub cores: Option<usize>,
    /// Name shown in the driver's status (default: executor-<pid>).
    #[arg(long)]
    pub name: Option<String>,
    /// Largest model this executor takes on, in MiB per copy of its
    /// parameters (default: the 6 copies it keeps fit in a quarter of this
    /// machine's memory); larger tasks are refused.
    #[arg(long, value_name = "MIB")]
    pub max_model_mb: Option<u64>,
    /// Read the driver's address from this file (written by `deepdist launch
    /// --rendezvous`) before every connection attempt, instead of --driver.
    #[arg(long, value_name = "PATH")]
    pub rendezvous: Option<PathBuf>,
    /// Under `mpirun`: the ranks on each node form one executor group,
    /// which the driver sees as one executor with all their cores (needs a
    /// build with `--features mpi`). --cores is then each rank's threads
    /// (default: the node's cores shared among its ranks).
    #[arg(long)]
    pub mpi: bool,
    #[command(flatten)]
    pub run: RunMembership,
}

/// An executor that belongs to one run, as `deepdist launch` starts them.
#[derive(Debug, Clone, Args)]
pub struct RunMembership {
    /// Exit when the driver ends the run, with its job's status (0 done,
    /// 1 failed or cancelled), and give up when the driver stays out of
    /// reach; without it, an executor serves its driver until stopped.
    #[arg(long)]
    pub exit_with_run: bool,
    /// With --exit-with-run: seconds to wait for the driver at the start
    /// (ranks start in any order).
    #[arg(long, default_value_t = 300, value_name = "SECONDS")]
    pub join_timeout_s: u64,
    /// With --exit-with-run: seconds to try to reconnect after the
    /// connection is lost before the driver is taken for dead.
    #[arg(long, default_value_t = 5, value_name = "SECONDS")]
    pub rejoin_timeout_s: u64,
}

/// Submit options.
#[derive(Debug, Args)]
pub struct SubmitArgs {
    /// The job file (TOML).
    pub job: PathBuf,
    #[command(flatten)]
    pub driver: DriverAddr,
    /// Stay and show progress until the job ends.
    #[arg(long)]
    pub wait: bool,
}

/// Cancel options.
#[derive(Debug, Args)]
pub struct CancelArgs {
    /// The job id `submit` printed.
    pub job: u64,
    #[command(flatten)]
    pub driver: DriverAddr,
}

/// Local-mode options.
#[derive(Debug, Args)]
pub struct LocalArgs {
    /// The job file (default: the built-in jobs/mnist-mlp.toml).
    pub job: Option<PathBuf>,
    /// Executors to start.
    #[arg(long, default_value_t = 2)]
    pub executors: usize,
    /// Compute threads per executor (default: cores divided among the executors).
    #[arg(long)]
    pub cores_per_executor: Option<usize>,
    /// Connect the executors to the driver over loopback TCP, as across
    /// machines, instead of in-process pipes.
    #[arg(long)]
    pub loopback_tcp: bool,
    #[command(flatten)]
    pub run: DriverSettings,
}

/// Dataset commands.
#[derive(Debug, Subcommand)]
pub enum DataCommand {
    /// Find MNIST in the data directory, or download it, and verify every file by MD5.
    Fetch {
        /// The dataset.
        #[arg(value_enum, default_value_t = DatasetName::Mnist)]
        dataset: DatasetName,
        #[command(flatten)]
        data: DataDirArg,
    },
    /// Describe a dataset before training on it: shapes, classes, examples per class, feature range.
    Inspect {
        /// Its format.
        #[arg(long, value_enum, default_value_t = FormatArg::Mnist)]
        format: FormatArg,
        /// Its path (the directory, or an .npz file).
        #[arg(long, value_name = "PATH")]
        path: Option<String>,
        /// CSV: whether the first row is a header (default: detected).
        #[arg(long)]
        header: Option<bool>,
        /// CSV: the label column's name.
        #[arg(long, value_name = "NAME")]
        label_column: Option<String>,
        #[command(flatten)]
        data: DataDirArg,
    },
}

/// Datasets deepdist knows.
#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum DatasetName {
    /// LeCun's handwritten digits, 60,000 + 10,000 images of 28×28.
    Mnist,
}

/// Where datasets live.
#[derive(Debug, Clone, Args)]
pub struct DataDirArg {
    /// Data directory (MNIST in its mnist/ subdirectory). Default: $DEEPDIST_DATA, else ~/.cache/deepdist.
    #[arg(long, value_name = "DIR")]
    pub data_dir: Option<PathBuf>,
}

/// In-process training options.
#[derive(Debug, Args)]
pub struct TrainArgs {
    /// Hidden layer sizes, comma-separated.
    #[arg(long, value_delimiter = ',', default_value = "500,500")]
    pub hidden: Vec<usize>,
    /// Hidden nonlinearity.
    #[arg(long, value_enum, default_value_t = ActivationArg::Relu)]
    pub activation: ActivationArg,
    /// Passes over the training set.
    #[arg(long, default_value_t = 10)]
    pub epochs: usize,
    /// Minibatch size.
    #[arg(long, default_value_t = 128)]
    pub batch: usize,
    /// Learning rate.
    #[arg(long, default_value_t = 0.05)]
    pub lr: f32,
    /// SGD momentum (Nesterov).
    #[arg(long, default_value_t = 0.9)]
    pub momentum: f32,
    /// Multiply the learning rate by this after every epoch.
    #[arg(long, default_value_t = 1.0)]
    pub lr_decay: f32,
    /// L2 weight decay.
    #[arg(long, default_value_t = 0.0)]
    pub weight_decay: f32,
    /// Worker threads (default: every core).
    #[arg(long)]
    pub threads: Option<usize>,
    /// Seed for initialisation and minibatch order.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    #[command(flatten)]
    pub data: DataDirArg,
}

/// Hidden nonlinearities, as command-line values.
#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum ActivationArg {
    /// Logistic sigmoid.
    Sigmoid,
    /// Hyperbolic tangent.
    Tanh,
    /// Rectified linear.
    Relu,
}

impl From<ActivationArg> for Activation {
    fn from(a: ActivationArg) -> Self {
        match a {
            ActivationArg::Sigmoid => Activation::Sigmoid,
            ActivationArg::Tanh => Activation::Tanh,
            ActivationArg::Relu => Activation::Relu,
        }
    }
}
