//! Arguments of `deepdist launch`.

use std::path::PathBuf;

use clap::Args;

use super::{DriverSettings, PlaintextArg, RunMembership, SecretArg, TlsServerArgs};

/// `deepdist launch`: one command for every rank of a run, whatever started it.
#[derive(Debug, Args)]
pub struct LaunchArgs {
    /// The job file (TOML).
    pub job: PathBuf,
    /// The driver's address, `host:port`: where executors dial, and the port
    /// the driver's rank listens on. Default: the first host of Slurm's
    /// node list, or the rendezvous file, with --port.
    #[arg(long, value_name = "HOST:PORT")]
    pub driver: Option<String>,
    /// The port the driver's rank listens on (0: any free port, for
    /// --rendezvous and --hosts, which pass on the one chosen).
    #[arg(long, default_value_t = 7077)]
    pub port: u16,
    /// The address the driver's rank listens on.
    #[arg(long, default_value = "0.0.0.0", value_name = "IP")]
    pub bind: String,
    /// A file on a filesystem every rank sees: the driver's rank writes its
    /// address there (atomically), executors read it (mpirun without --driver).
    #[arg(long, value_name = "PATH")]
    pub rendezvous: Option<PathBuf>,
    /// The host name or address executors reach the driver's rank by, as
    /// written to the rendezvous file or given to --hosts executors.
    /// Default: with --hosts, this machine's address on the route to each
    /// host; else this machine's host name.
    #[arg(long, value_name = "HOST")]
    pub advertise: Option<String>,
    /// Start the driver here and one executor per line of this file
    /// (`host [slots=N]`, N cores for that host's executor) over ssh.
    #[arg(long, value_name = "FILE")]
    pub hosts: Option<PathBuf>,
    /// The ssh client and its options for --hosts (split at spaces), e.g.
    /// "ssh -F ~/.ssh/lab_config"; BatchMode is always on.
    #[arg(long, default_value = "ssh", value_name = "COMMAND")]
    pub ssh_command: String,
    /// The deepdist binary on --hosts machines (default: this binary's path).
    #[arg(long, value_name = "PATH")]
    pub remote_deepdist: Option<String>,
    /// Executors the driver's rank waits for before submitting the job
    /// (default: the run's ranks less one; with --hosts, one per host;
    /// with no cluster manager, the local executors to start: 2).
    #[arg(long)]
    pub executors: Option<usize>,
    /// Longest wait for those executors; the job then starts with those
    /// that came (late ones still join).
    #[arg(long, default_value_t = 120, value_name = "SECONDS")]
    pub wait_executors_s: u64,
    /// Compute threads per executor (default: SLURM_CPUS_PER_TASK, else
    /// this node's cores divided among the run's tasks on it).
    #[arg(long)]
    pub cores: Option<usize>,
    /// Under mpirun (or srun with MPI): the executor ranks on each node form
    /// one executor group over MPI, so the driver waits for one executor per
    /// node (needs a build with `--features mpi`).
    #[arg(long, conflicts_with = "hosts")]
    pub mpi: bool,
    #[command(flatten)]
    pub secret: SecretArg,
    /// PEM file of the CA that signed the driver's certificate: executors
    /// (and the driver's rank, to submit) dial with TLS.
    #[arg(long, value_name = "FILE")]
    pub tls_ca: Option<PathBuf>,
    #[command(flatten)]
    pub tls: TlsServerArgs,
    #[command(flatten)]
    pub plaintext: PlaintextArg,
    /// Resume the job of the newest checkpoint in --runs-dir (after the
    /// driver's rank died) instead of submitting the job file's.
    #[arg(long)]
    pub recover: bool,
    /// For a manager that may run this command again after a crash
    /// (Kubernetes pod retries, Slurm's --requeue): resume the job an
    /// earlier run left unfinished in --runs-dir, if any, else submit the
    /// job file's.
    #[arg(long, conflicts_with = "recover")]
    pub restartable: bool,
    /// Longest seconds between checkpoints within an epoch.
    #[arg(long, default_value_t = 60, value_name = "SECONDS")]
    pub checkpoint_interval_s: u64,
    #[command(flatten)]
    pub membership: LaunchPatience,
    #[command(flatten)]
    pub run: DriverSettings,
}

/// How long executor ranks wait for the driver's rank.
#[derive(Debug, Clone, Args)]
pub struct LaunchPatience {
    /// Seconds an executor rank waits for the driver at the start.
    #[arg(long, default_value_t = 300, value_name = "SECONDS")]
    pub join_timeout_s: u64,
    /// Seconds an executor rank tries to reconnect after losing the driver
    /// before it exits (the driver's rank died: the run is over).
    #[arg(long, default_value_t = 5, value_name = "SECONDS")]
    pub rejoin_timeout_s: u64,
}

impl LaunchPatience {
    /// The same as an executor's `--exit-with-run` flags.
    pub fn membership(&self) -> RunMembership {
        RunMembership {
            exit_with_run: true,
            join_timeout_s: self.join_timeout_s,
            rejoin_timeout_s: self.rejoin_timeout_s,
        }
    }
}
