//! Serving as an executor until it is stopped or its run is over, and
//! saying how the run ended.

use std::time::Duration;

use deepdist_core::job::JobState;
use deepdist_executor::{ExecutorConfig, Finish, Patience};

use crate::cli::RunMembership;

/// The patience `--exit-with-run` asks for.
pub fn patience(run: &RunMembership) -> Option<Patience> {
    run.exit_with_run.then(|| Patience {
        join: Duration::from_secs(run.join_timeout_s),
        rejoin: Duration::from_secs(run.rejoin_timeout_s),
    })
}

/// Serves as an executor until Ctrl-C or the end of its run.
pub async fn serve_executor(config: ExecutorConfig) -> anyhow::Result<()> {
    println!(
        "deepdist executor {} with {} cores, driver {}",
        config.name,
        config.cores,
        shown_driver(&config)
    );
    let (stop, stopped) = tokio::sync::watch::channel(false);
    until_finished(tokio::spawn(deepdist_executor::run(config, stopped)), stop).await
}

/// Where an executor looks for its driver, for people.
pub fn shown_driver(config: &ExecutorConfig) -> String {
    match &config.rendezvous {
        Some(path) => format!("from {}", path.display()),
        None => config.driver.clone(),
    }
}

/// Waits for a running executor to finish, or stops it on Ctrl-C or
/// SIGTERM; says how its run ended.
pub async fn until_finished(
    executor: tokio::task::JoinHandle<Result<Finish, deepdist_executor::ExecutorError>>,
    stop: tokio::sync::watch::Sender<bool>,
) -> anyhow::Result<()> {
    let finish = tokio::select! {
        r = executor => r??,
        r = super::stop_signal() => { r?; let _ = stop.send(true); Finish::Stopped }
    };
    match finish {
        Finish::Stopped => Ok(()),
        Finish::RunOver(JobState::Done) => {
            println!("the run is over: its job is done");
            Ok(())
        }
        Finish::RunOver(state) => anyhow::bail!("the run is over: its job ended {state}"),
    }
}
