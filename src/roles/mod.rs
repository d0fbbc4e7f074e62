//! The building blocks of every role this binary plays: starting a driver,
//! serving as an executor, the in-process cluster, an MPI executor group,
//! a client's credentials and the progress shown to people. The
//! subcommands (`commands/`) and the launchers (`launch/`) are built from
//! these and nothing here calls back up into them.

pub mod client;
pub mod driver;
pub mod executor;
pub mod local;
pub mod mpi;
pub mod progress;

/// A multi-threaded tokio runtime for the network commands.
pub fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_multi_thread().enable_all().build()?)
}

/// Resolves on Ctrl-C or SIGTERM (how Slurm, Kubernetes and `kill` stop a task).
pub async fn stop_signal() -> anyhow::Result<()> {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    tokio::select! {
        r = tokio::signal::ctrl_c() => r?,
        _ = term.recv() => {}
    }
    Ok(())
}
