//! Arguments of `deepdist bench` and its experiments.

use std::path::PathBuf;

use clap::{Args, Subcommand};

use super::{DataDirArg, SecretArg};

/// Benchmark options.
#[derive(Debug, Args)]
#[command(args_conflicts_with_subcommands = true)]
pub struct BenchArgs {
    #[command(subcommand)]
    pub experiment: Option<BenchExperiment>,
    /// Thread counts to measure, comma-separated.
    #[arg(long, value_delimiter = ',', default_value = "1,2")]
    pub threads: Vec<usize>,
    /// Rounds, each one timed window of the GEMM peak and of every workload; medians are reported.
    #[arg(long, default_value_t = 5)]
    pub trials: usize,
    /// Length of one timed window, in seconds.
    #[arg(long, default_value_t = 1.0)]
    pub seconds: f64,
}

/// Experiments `deepdist bench` can run besides its GEMM measurement.
#[derive(Debug, Subcommand)]
pub enum BenchExperiment {
    /// The distributed-DBN experiment (an MPI study, 2 nodes × 8 tasks): a DBN job in local mode for every
    /// executors × cores × partitions; time to > 90% and ≥ 98% test accuracy
    /// as a table (Markdown, CSV) and a plot (SVG).
    Dbn(DbnBenchArgs),
    /// Every training mode on the MLP job in local mode, for several
    /// executor counts: medians as a table (Markdown, CSV) and plots (SVG).
    Modes(ModesBenchArgs),
    /// Delay-tolerant optimizers: the server applies every update late, by
    /// each of several delays; final accuracy per optimizer and delay.
    Delays(DelaysBenchArgs),
    /// Hogwild!: one executor's throughput with split minibatches, a locked
    /// shared copy and a lock-free one, on dense and sparse updates.
    Hogwild(HogwildBenchArgs),
    /// Load on one parameter server: simulated executors speaking the real
    /// protocol push updates of the real MLP's shape, without computing.
    Ps(PsBenchArgs),
    /// Speed-up as the cluster grows: the job on simulated clusters of N
    /// executors × C cores (the real training code in virtual time, costs
    /// measured here), time to its target against one executor's.
    Scaling(ScalingBenchArgs),
    /// The simulation against real runs on this machine: the job in local
    /// mode and simulated on this machine's cores, for several executor
    /// counts and seeds; accuracy by epoch, staleness and samples/s compared.
    SimCheck(SimCheckBenchArgs),
}

/// The simulation check's options.
#[derive(Debug, Args)]
pub struct SimCheckBenchArgs {
    /// The job (default: the built-in jobs/mnist-mlp.toml).
    pub job: Option<PathBuf>,
    /// Executor counts, comma-separated.
    #[arg(long, value_delimiter = ',', default_value = "2,4,8")]
    pub executors: Vec<usize>,
    /// Seeds, comma-separated: each count runs once per seed, and medians are compared.
    #[arg(long, value_delimiter = ',', default_value = "1,2,3")]
    pub seeds: Vec<u64>,
    /// Length of each timed window of the cost measurement, in seconds.
    #[arg(long, default_value_t = 1.0)]
    pub seconds: f64,
    /// Run the real jobs on this running driver instead of a local cluster:
    /// its executors (one core each, on this machine, e.g. in a network
    /// namespace behind a rate limit) must number the one count in --executors.
    #[arg(long, value_name = "HOST:PORT")]
    pub driver: Option<String>,
    /// The network the simulation models (default: in-process pipes, 40gbit).
    #[arg(long)]
    pub link: Option<String>,
    /// Where the report and the real runs go.
    #[arg(long, default_value = "bench/results/sim-check")]
    pub out: PathBuf,
    #[command(flatten)]
    pub data: DataDirArg,
}

/// The scaling sweep's options.
#[derive(Debug, Args)]
pub struct ScalingBenchArgs {
    /// The job (default: the built-in jobs/mnist-mlp.toml); it must set `train.target_accuracy`.
    pub job: Option<PathBuf>,
    /// Executor counts, comma-separated; 1 is the baseline of the speed-up.
    #[arg(long, value_delimiter = ',', default_value = "1,2,4,8,16")]
    pub executors: Vec<usize>,
    /// Cores per executor, comma-separated.
    #[arg(long, value_delimiter = ',', default_value = "1,8")]
    pub cores: Vec<usize>,
    /// The network: a rate such as 10gbit, 1gbit, 100mbit (50 µs latency).
    #[arg(long, default_value = "10gbit")]
    pub link: String,
    /// What each core beyond the first adds, as a fraction of one (default: measured on 1 and 2 threads here).
    #[arg(long)]
    pub core_efficiency: Option<f64>,
    /// Evaluate after every this many epochs' worth of examples.
    #[arg(long, default_value_t = 0.25)]
    pub eval_every: f64,
    /// Parameter-server shards in the simulated driver, each on a core of its own.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u16).range(1..=256))]
    pub shards: u16,
    /// Put each shard on a host of its own, with its own network card (the
    /// driver's one card carries every byte otherwise).
    #[arg(long)]
    pub shard_hosts: bool,
    /// Length of each timed window of the cost measurement, in seconds.
    #[arg(long, default_value_t = 1.0)]
    pub seconds: f64,
    /// Where the tables go.
    #[arg(long, default_value = "bench/results", value_name = "DIR")]
    pub out: PathBuf,
    #[command(flatten)]
    pub data: DataDirArg,
}

/// The parameter-server load test's options.
#[derive(Debug, Args)]
pub struct PsBenchArgs {
    /// Simulated executor counts, comma-separated.
    #[arg(long, value_delimiter = ',', default_value = "1,4,16,64,256")]
    pub executors: Vec<usize>,
    /// Seconds of load per count.
    #[arg(long, default_value_t = 10.0)]
    pub seconds: f64,
    /// Parameter-server shard counts (the driver's `--server-shards`),
    /// comma-separated: every executor count runs with each.
    #[arg(long, value_delimiter = ',', default_value = "1")]
    pub shards: Vec<usize>,
    /// Run the driver on these CPUs only (`taskset -c`, e.g. `1` or `0-3`),
    /// away from the load generator.
    #[arg(long, value_name = "CPUS")]
    pub driver_cpus: Option<String>,
    /// Where the table and the driver's runs go.
    #[arg(long, default_value = "bench/results", value_name = "DIR")]
    pub out: PathBuf,
    #[command(flatten)]
    pub data: DataDirArg,
}

/// The mode comparison's options.
#[derive(Debug, Args)]
pub struct ModesBenchArgs {
    /// A job whose data, model, optimizer and epochs every mode uses
    /// (default: each mode's shipped example, jobs/mnist-mlp*.toml).
    pub job: Option<PathBuf>,
    /// Modes to run, comma-separated (default: all, and async with Hogwild!
    /// executors as `async+hogwild`).
    #[arg(long, value_delimiter = ',')]
    pub modes: Vec<String>,
    /// Executor counts, comma-separated (one core each when they outnumber the cores).
    #[arg(long, value_delimiter = ',', default_value = "2,4,8,16")]
    pub executors: Vec<usize>,
    /// Runs of every configuration; tables give medians.
    #[arg(long, default_value_t = 3)]
    pub runs: usize,
    /// Where the tables, plots and runs go.
    #[arg(long, default_value = "bench/results", value_name = "DIR")]
    pub out: PathBuf,
    #[command(flatten)]
    pub data: DataDirArg,
}

/// The delay sweep's options.
#[derive(Debug, Args)]
pub struct DelaysBenchArgs {
    /// Delays in updates, comma-separated.
    #[arg(long, value_delimiter = ',', default_value = "0,16,64,256,1024")]
    pub delays: Vec<u32>,
    /// Runs of every optimizer and delay; the table gives medians.
    #[arg(long, default_value_t = 3)]
    pub runs: usize,
    /// Where the table, plot and runs go.
    #[arg(long, default_value = "bench/results", value_name = "DIR")]
    pub out: PathBuf,
    #[command(flatten)]
    pub data: DataDirArg,
}

/// The Hogwild! measurement's options.
#[derive(Debug, Args)]
pub struct HogwildBenchArgs {
    /// Threads of the executor.
    #[arg(long, default_value_t = 2)]
    pub threads: usize,
    /// Timed windows per measurement; the median is reported.
    #[arg(long, default_value_t = 5)]
    pub trials: usize,
    /// Length of one timed window, in seconds.
    #[arg(long, default_value_t = 1.0)]
    pub seconds: f64,
    #[command(flatten)]
    pub data: DataDirArg,
}

/// The DBN grid's options.
#[derive(Debug, Args)]
pub struct DbnBenchArgs {
    /// The job file (default: the built-in jobs/mnist-dbn-fast.toml); its partitions,
    /// target and stop-at-target are set by the grid.
    pub job: Option<PathBuf>,
    /// Executor counts, comma-separated.
    #[arg(long, value_delimiter = ',', default_value = "1,2")]
    pub executors: Vec<usize>,
    /// Compute threads per executor, comma-separated.
    #[arg(long, value_delimiter = ',', default_value = "1,2")]
    pub cores: Vec<usize>,
    /// Partition counts, comma-separated.
    #[arg(long, value_delimiter = ',', default_value = "2,4,8,16,32,64")]
    pub partitions: Vec<u32>,
    /// Also run combinations with more threads than this machine has cores.
    #[arg(long)]
    pub oversubscribe: bool,
    /// Run on this driver's executors instead of in this process; only
    /// --partitions varies.
    #[arg(long, value_name = "HOST:PORT")]
    pub driver: Option<String>,
    /// With --driver: the shared secret.
    #[command(flatten)]
    pub secret: SecretArg,
    /// With --driver: the CA of the driver's TLS certificate.
    #[arg(long, value_name = "FILE")]
    pub tls_ca: Option<PathBuf>,
    /// Run nothing: redraw the table and plot from a dbn-grid.csv (e.g. runs
    /// gathered from several machines).
    #[arg(long, value_name = "FILE")]
    pub from_csv: Option<std::path::PathBuf>,
    /// At most this many fine-tuning epochs per run.
    #[arg(long)]
    pub max_epochs: Option<u32>,
    /// Run the grid on simulated clusters (`deepdist-sim`: executors of
    /// their own cores behind --link, the costs measured here) instead of
    /// this machine's cores; each run stops at > 90%.
    #[arg(long, conflicts_with_all = ["driver", "from_csv"])]
    pub simulate: bool,
    /// With --simulate: the network, e.g. 10gbit, 1gbit, 100mbit.
    #[arg(long, default_value = "10gbit", requires = "simulate")]
    pub link: String,
    /// One partition per executor (as the study cut its data by MPI
    /// task): --partitions is then ignored.
    #[arg(long)]
    pub one_partition_each: bool,
    /// Where the table, the plot and the runs go.
    #[arg(long, default_value = "bench/results", value_name = "DIR")]
    pub out: PathBuf,
    #[command(flatten)]
    pub data: DataDirArg,
}
