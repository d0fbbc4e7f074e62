//! `deepdist launch --hosts FILE`: the driver here, one executor per host
//! over the system's OpenSSH client (BatchMode, the user's keys and
//! `~/.ssh/config`), their output here with a `[host]` prefix, and all of
//! them gone when the run ends.

use std::process::Stdio;
use std::time::Duration;

use anyhow::Context;
use deepdist_core::job::JobState;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::process::{Child, Command};
use tokio::task::JoinSet;

use super::run_host::{RunHost, join_host_port};
use crate::cli::LaunchArgs;

/// How long executors' ssh sessions get to end by themselves after the run.
const LINGER: Duration = Duration::from_secs(20);

/// One line of a hosts file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Host {
    /// What ssh is given: a name, an address or a `~/.ssh/config` alias.
    pub name: String,
    /// Cores for its executor (default: all of that host's).
    pub slots: Option<usize>,
}

/// The hosts of a hosts file: `host [slots=N]` per line, `#` comments.
pub fn parse_hosts(text: &str, origin: &str) -> anyhow::Result<Vec<Host>> {
    let mut hosts = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let line = line.split('#').next().unwrap_or("").trim();
        let mut words = line.split_whitespace();
        let Some(name) = words.next() else { continue };
        let mut host = Host {
            name: name.to_string(),
            slots: None,
        };
        for word in words {
            let slots = word
                .strip_prefix("slots=")
                .and_then(|n| n.parse::<usize>().ok())
                .filter(|&n| n > 0)
                .with_context(|| format!("{origin} line {}: {word:?} is not slots=N (N ≥ 1)", i + 1))?;
            host.slots = Some(slots);
        }
        hosts.push(host);
    }
    anyhow::ensure!(!hosts.is_empty(), "{origin} names no host");
    Ok(hosts)
}

/// Runs the job with one executor per host; fails unless it ends `done`.
pub async fn run(args: LaunchArgs) -> anyhow::Result<()> {
    let path = args.hosts.as_deref().context("--hosts")?;
    let text = std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    let hosts = parse_hosts(&text, &path.display().to_string())?;
    let ssh: Vec<String> = args.ssh_command.split_whitespace().map(String::from).collect();
    anyhow::ensure!(!ssh.is_empty(), "--ssh-command is empty");
    // Each host dials the driver at this machine's address on the route to
    // it: a driver on several networks (a login node) is reached on each.
    let mut advertised = Vec::new();
    for host in &hosts {
        advertised.push(match &args.advertise {
            Some(name) => name.clone(),
            None => route_address(&ssh, &host.name).await.unwrap_or_else(super::this_host),
        });
    }
    println!("deepdist launch: the driver here, {} executors over ssh", hosts.len());
    let run = RunHost::start(&args, &advertised[0]).await?;
    let secret = match &args.secret.secret_file {
        Some(file) => Some(std::fs::read(file).with_context(|| format!("cannot read {}", file.display()))?),
        None => std::env::var_os(deepdist_wire::proto::auth::SECRET_ENV).map(|v| v.into_encoded_bytes()),
    };
    let mut sessions = JoinSet::new();
    for (host, advertise) in hosts.iter().zip(&advertised) {
        let driver = join_host_port(advertise, run.port());
        let child = start_executor(&args, &ssh, host, &driver, secret.as_deref()).await?;
        sessions.spawn(follow(host.name.clone(), child));
    }
    let expected = args.executors.unwrap_or(hosts.len());
    let wait = Duration::from_secs(args.wait_executors_s);
    let outcome = tokio::select! {
        r = run.run_job(&args, Some(expected), wait) => r,
        // Every session ended before the job did: nobody can compute it.
        _ = all_ended(&mut sessions) => Err(anyhow::anyhow!(
            "every executor's ssh session ended before the job did: see the [host] lines above"
        )),
    };
    run.finish(*outcome.as_ref().unwrap_or(&JobState::Failed)).await;
    // Executors leave when told the run is over; whatever is left is killed.
    if tokio::time::timeout(LINGER, all_ended(&mut sessions)).await.is_err() {
        tracing::warn!(
            "ssh sessions still open {} s after the run: killing them",
            LINGER.as_secs()
        );
        sessions.shutdown().await;
    }
    let state = outcome?;
    anyhow::ensure!(state == JobState::Done, "the job ended {state}");
    Ok(())
}

/// Starts `ssh host deepdist executor …`, handing it the secret on stdin.
async fn start_executor(
    args: &LaunchArgs,
    ssh: &[String],
    host: &Host,
    driver: &str,
    secret: Option<&[u8]>,
) -> anyhow::Result<Child> {
    let exe = match &args.remote_deepdist {
        Some(path) => path.clone(),
        None => std::env::current_exe()
            .context("cannot tell this binary's path: give --remote-deepdist")?
            .display()
            .to_string(),
    };
    let mut remote = vec![
        exe,
        "executor".into(),
        "--driver".into(),
        driver.into(),
        "--name".into(),
        host.name.clone(),
        "--exit-with-run".into(),
        "--join-timeout-s".into(),
        args.membership.join_timeout_s.to_string(),
        "--rejoin-timeout-s".into(),
        args.membership.rejoin_timeout_s.to_string(),
    ];
    if let Some(cores) = host.slots.or(args.cores) {
        remote.extend(["--cores".into(), cores.to_string()]);
    }
    if secret.is_some() {
        remote.extend(["--secret-file".into(), "-".into()]);
    }
    if let Some(ca) = &args.tls_ca {
        // The remote shell starts in the home directory: a relative path
        // would name another file there. The same absolute path is what a
        // shared filesystem or an identical install gives every host.
        let ca = std::path::absolute(ca).with_context(|| format!("cannot resolve {}", ca.display()))?;
        remote.extend(["--tls-ca".into(), ca.display().to_string()]);
    }
    let command = remote.iter().map(|a| shell_quote(a)).collect::<Vec<_>>().join(" ");
    let mut child = Command::new(&ssh[0])
        .args(&ssh[1..])
        .args(["-o", "BatchMode=yes", &host.name, "--", &command])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .with_context(|| format!("cannot run {:?}", ssh[0]))?;
    if let Some(mut stdin) = child.stdin.take() {
        if let Some(secret) = secret {
            stdin.write_all(secret).await.ok();
        }
        // Closing stdin ends the secret; the executor reads nothing else.
        drop(stdin);
    }
    Ok(child)
}

/// Copies a session's output here line by line with its host's prefix;
/// returns when it exits.
async fn follow(host: String, mut child: Child) -> (String, std::io::Result<std::process::ExitStatus>) {
    let out = child.stdout.take().map(|s| prefix_lines(host.clone(), s, false));
    let err = child.stderr.take().map(|s| prefix_lines(host.clone(), s, true));
    let status = child.wait().await;
    for task in [out, err].into_iter().flatten() {
        let _ = task.await;
    }
    match &status {
        Ok(s) if s.success() => println!("[{host}] executor exited"),
        Ok(s) => eprintln!("[{host}] executor's ssh session exited with {s}"),
        Err(e) => eprintln!("[{host}] cannot wait for ssh: {e}"),
    }
    (host, status)
}

fn prefix_lines(
    host: String,
    stream: impl tokio::io::AsyncRead + Unpin + Send + 'static,
    to_stderr: bool,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut lines = BufReader::new(stream).lines();
        while let Ok(Some(line)) = lines.next_line().await {
            if to_stderr {
                eprintln!("[{host}] {line}");
            } else {
                println!("[{host}] {line}");
            }
        }
    })
}

async fn all_ended(sessions: &mut JoinSet<(String, std::io::Result<std::process::ExitStatus>)>) {
    while sessions.join_next().await.is_some() {}
}

/// This machine's address on the route to `host`, as ssh resolves it
/// (`ssh -G` applies `~/.ssh/config`): where that host can reach the driver.
async fn route_address(ssh: &[String], host: &str) -> Option<String> {
    let out = Command::new(&ssh[0])
        .args(&ssh[1..])
        .args(["-G", host])
        .stdin(Stdio::null())
        .output()
        .await
        .ok()?;
    let config = String::from_utf8_lossy(&out.stdout);
    let name = config
        .lines()
        .find_map(|l| l.strip_prefix("hostname "))?
        .trim()
        .to_string();
    let target = tokio::net::lookup_host((name.as_str(), 22)).await.ok()?.next()?;
    let local = if target.is_ipv4() { "0.0.0.0:0" } else { "[::]:0" };
    let socket = std::net::UdpSocket::bind(local).ok()?;
    // Connecting a UDP socket sends nothing; it only picks the route.
    socket.connect(target).ok()?;
    let ip = socket.local_addr().ok()?.ip();
    (!ip.is_unspecified()).then(|| ip.to_string())
}

/// `arg` quoted for the remote shell.
fn shell_quote(arg: &str) -> String {
    let plain = !arg.is_empty()
        && arg
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_./:=@,+".contains(c));
    if plain {
        arg.to_string()
    } else {
        format!("'{}'", arg.replace('\'', r"'\''"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hosts_files_read_as_horovod_and_spark_write_them() {
        let hosts = parse_hosts(
            "# lab\nnode01 slots=4\n\n node02  # the old one\n10.0.0.7 slots=1\n",
            "hosts.txt",
        )
        .unwrap();
        assert_eq!(
            hosts,
            [
                Host {
                    name: "node01".into(),
                    slots: Some(4)
                },
                Host {
                    name: "node02".into(),
                    slots: None
                },
                Host {
                    name: "10.0.0.7".into(),
                    slots: Some(1)
                },
            ]
        );
    }

    #[test]
    fn a_bad_hosts_line_is_named() {
        let e = parse_hosts("a\nb slots=x\n", "hosts.txt").unwrap_err().to_string();
        assert!(e.contains("line 2"), "{e}");
        assert!(parse_hosts("b slots=0", "h").is_err());
        assert!(parse_hosts("# nothing\n", "h").is_err());
    }

    #[test]
    fn remote_arguments_survive_the_remote_shell() {
        assert_eq!(shell_quote("/opt/deepdist/bin/deepdist"), "/opt/deepdist/bin/deepdist");
        assert_eq!(shell_quote("a b"), "'a b'");
        assert_eq!(shell_quote("it's"), r"'it'\''s'");
        assert_eq!(shell_quote(""), "''");
    }
}
