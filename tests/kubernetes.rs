//! The Kubernetes deployment in deploy/k8s, run without a cluster (none can
//! start here): the test reads the Indexed Job, its headless Service and the
//! Dockerfile, checks they fit together, then runs every pod's exact command
//! line with what a pod gets — its `JOB_COMPLETION_INDEX` and host name, the
//! container's environment, the ConfigMap, Secrets and claim it mounts — each
//! pod in a network namespace of its own, where the Service's DNS name for
//! the driver pod resolves to that pod's address.

mod support;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use support::{cannot_run, data_dir, small_job};
use yaml_rust2::{Yaml, YamlLoader};

/// deploy/k8s/`name`.
fn deploy_file(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/k8s").join(name)
}

/// The one document of the manifest deploy/k8s/`name`.
fn manifest(name: &str) -> Yaml {
    let text = std::fs::read_to_string(deploy_file(name)).unwrap();
    let mut docs = YamlLoader::load_from_str(&text).unwrap_or_else(|e| panic!("{name}: {e}"));
    assert_eq!(docs.len(), 1, "{name} holds one object");
    docs.remove(0)
}

/// A string field that must be there.
fn text<'a>(y: &'a Yaml, what: &str) -> &'a str {
    y.as_str()
        .unwrap_or_else(|| panic!("{what} is missing or not a string: {y:?}"))
}

/// The value of `--flag=VALUE` in a command line.
fn flag<'a>(command: &'a [String], name: &str) -> &'a str {
    let prefix = format!("{name}=");
    command
        .iter()
        .find_map(|a| a.strip_prefix(&prefix))
        .unwrap_or_else(|| panic!("the container's command has no {name}=: {command:?}"))
}

/// Where each path the container sees is on this machine: the volumes'
/// mount paths and the image's data directory.
struct PodFiles(Vec<(String, PathBuf)>);

impl PodFiles {
    /// `value` (a path, or `--flag=path`) as a path on this machine.
    fn map(&self, value: &str) -> String {
        let (flag, path) = match value.split_once('=') {
            Some((flag, path)) if flag.starts_with("--") => (format!("{flag}="), path),
            _ => (String::new(), value),
        };
        for (inside, here) in &self.0 {
            if let Some(rest) = path.strip_prefix(inside.as_str())
                && (rest.is_empty() || rest.starts_with('/'))
            {
                return format!("{flag}{}{rest}", here.display());
            }
        }
        value.to_string()
    }
}

/// What `kubectl create secret generic NAME --from-file=KEY=PATH...` lines
/// (as deploy/k8s/make-secrets.sh prints them) would create: NAME → a
/// directory holding KEY, as a Secret volume shows it.
fn secrets_from(kubectl: &str, into: &Path) -> BTreeMap<String, PathBuf> {
    let mut secrets = BTreeMap::new();
    for line in kubectl.lines() {
        let words: Vec<&str> = line.split_whitespace().collect();
        let Some(["kubectl", "create", "secret", "generic", name]) = words.get(..5) else {
            panic!("not a kubectl create secret line: {line}");
        };
        let dir = into.join(name);
        std::fs::create_dir_all(&dir).unwrap();
        for file in &words[5..] {
            let (key, path) = file
                .strip_prefix("--from-file=")
                .and_then(|f| f.split_once('='))
                .unwrap_or_else(|| panic!("{file}: not --from-file=KEY=PATH"));
            std::fs::copy(path, dir.join(key)).unwrap();
        }
        secrets.insert(name.to_string(), dir);
    }
    secrets
}

/// The shipped deployment, its references to each other checked.
struct Shipped {
    job: Yaml,
    /// The container's command line, as written.
    command: Vec<String>,
    completions: usize,
    /// The driver pod's DNS name, `<job>-0.<service>`.
    driver_host: String,
    dockerfile: String,
}

impl Shipped {
    /// Reads deploy/k8s and checks how the objects refer to each other: the
    /// pods' DNS names, the Service's selector and port, the executor count.
    fn load() -> Self {
        let job = manifest("job.yaml");
        let service = manifest("service.yaml");
        let dockerfile = std::fs::read_to_string(deploy_file("Dockerfile")).unwrap();
        assert_eq!(text(&job["kind"], "kind"), "Job");
        assert_eq!(text(&service["kind"], "kind"), "Service");
        let spec = &job["spec"];
        assert_eq!(text(&spec["completionMode"], "completionMode"), "Indexed");
        let completions = spec["completions"].as_i64().expect("completions") as usize;
        assert_eq!(
            spec["parallelism"].as_i64(),
            Some(completions as i64),
            "every pod at once"
        );
        let service_name = text(&service["metadata"]["name"], "the Service's name");
        assert_eq!(text(&spec["template"]["spec"]["subdomain"], "subdomain"), service_name);
        assert_eq!(text(&service["spec"]["clusterIP"], "clusterIP"), "None", "headless");
        assert_eq!(service["spec"]["publishNotReadyAddresses"].as_bool(), Some(true));
        let labels = &spec["template"]["metadata"]["labels"];
        let selector = service["spec"]["selector"].as_hash().expect("the Service's selector");
        for (key, value) in selector {
            assert_eq!(&labels[text(key, "label")], value, "the Service selects the Job's pods");
        }
        let command: Vec<String> = container(&job)["command"]
            .as_vec()
            .expect("command")
            .iter()
            .map(|a| text(a, "a command word").to_string())
            .collect();
        let driver_host = format!("{}-0.{service_name}", text(&job["metadata"]["name"], "the Job's name"));
        let service_port = service["spec"]["ports"][0]["port"]
            .as_i64()
            .expect("the Service's port");
        assert_eq!(flag(&command, "--driver"), format!("{driver_host}:{service_port}"));
        assert_eq!(flag(&command, "--executors"), (completions - 1).to_string());
        assert!(
            dockerfile.contains(&format!("/usr/local/bin/{}", command[0])),
            "the image puts {} on PATH",
            command[0]
        );
        Self {
            job,
            command,
            completions,
            driver_host,
            dockerfile,
        }
    }
}

/// The pod template's one container.
fn container(job: &Yaml) -> &Yaml {
    let [container] = job["spec"]["template"]["spec"]["containers"]
        .as_vec()
        .expect("containers")
        .as_slice()
    else {
        panic!("one container per pod");
    };
    container
}

/// The shipped Job's pods on this machine: one network namespace each, the
/// objects docs/launch.md has users create, one claim for all.
struct Pods {
    lab: support::sandbox::NetLab,
    dir: tempfile::TempDir,
    /// The command line with container paths mapped to this machine.
    argv: Vec<String>,
    env: Vec<(String, String)>,
    job_name: String,
    completions: usize,
}

impl Pods {
    /// Sets up the lab in 10.`net`.0.0/16 with `job_toml` as the ConfigMap's
    /// job file; `None` (after `cannot_run`) where it cannot.
    fn up(shipped: &Shipped, net: u8, job_toml: &str) -> Option<Self> {
        let scenario = "Kubernetes Indexed Job";
        let lab = match support::sandbox::NetLab::create(net, shipped.completions - 1) {
            Ok(lab) => lab,
            Err(why) => {
                cannot_run(scenario, &why);
                return None;
            }
        };
        if let Err(why) = lab.name_driver(&shipped.driver_host) {
            cannot_run(scenario, &why);
            return None;
        }
        // The ConfigMap from a job file, the Secrets from what
        // make-secrets.sh makes and prints.
        let dir = tempfile::tempdir().unwrap();
        let made = Command::new(deploy_file("make-secrets.sh"))
            .arg(dir.path().join("made"))
            .arg(&shipped.driver_host)
            .output()
            .unwrap();
        if !made.status.success() {
            let why = format!(
                "make-secrets.sh failed (is openssl installed?): {}",
                String::from_utf8_lossy(&made.stderr)
            );
            cannot_run(scenario, &why);
            return None;
        }
        let secrets = secrets_from(&String::from_utf8_lossy(&made.stdout), &dir.path().join("secrets"));
        let config_map = dir.path().join("configmap");
        std::fs::create_dir_all(&config_map).unwrap();
        let job_key = Path::new(&shipped.command[2]).file_name().unwrap();
        std::fs::write(config_map.join(job_key), job_toml).unwrap();
        let claim = dir.path().join("claim");
        std::fs::create_dir_all(&claim).unwrap();

        // Each pod's files: its volumes where the container mounts them, and
        // the image's data directory (MNIST, built in) as the tests' data.
        let pod = &shipped.job["spec"]["template"]["spec"];
        let volumes: BTreeMap<&str, PathBuf> = pod["volumes"]
            .as_vec()
            .expect("volumes")
            .iter()
            .map(|v| {
                let name = text(&v["name"], "a volume's name");
                let here = if let Some(map) = v["configMap"]["name"].as_str() {
                    assert_eq!(map, "deepdist-job", "the ConfigMap docs/launch.md creates");
                    config_map.clone()
                } else if let Some(secret) = v["secret"]["secretName"].as_str() {
                    let dir = secrets.get(secret);
                    dir.unwrap_or_else(|| panic!("make-secrets.sh makes no Secret {secret}"))
                        .clone()
                } else if v["persistentVolumeClaim"]["claimName"].as_str().is_some() {
                    claim.clone()
                } else {
                    panic!("volume {name}: of a kind this test does not provide: {v:?}")
                };
                (name, here)
            })
            .collect();
        let container = container(&shipped.job);
        let mut files: Vec<(String, PathBuf)> = container["volumeMounts"]
            .as_vec()
            .expect("volumeMounts")
            .iter()
            .map(|m| {
                let name = text(&m["name"], "a mount's volume");
                (text(&m["mountPath"], "mountPath").to_string(), volumes[name].clone())
            })
            .collect();
        let image_data = shipped
            .dockerfile
            .lines()
            .find_map(|l| l.strip_prefix("ENV DEEPDIST_DATA="))
            .expect("the image sets DEEPDIST_DATA");
        files.push((image_data.to_string(), data_dir()));
        let files = PodFiles(files);
        let mut env: Vec<(String, String)> = container["env"]
            .as_vec()
            .map(|vars| {
                vars.iter()
                    .map(|v| {
                        (
                            text(&v["name"], "env name").to_string(),
                            files.map(text(&v["value"], "env value")),
                        )
                    })
                    .collect()
            })
            .unwrap_or_default();
        let bin = Path::new(env!("CARGO_BIN_EXE_deepdist")).parent().unwrap();
        env.push((
            "PATH".into(),
            format!("{}:/usr/sbin:/usr/bin:/sbin:/bin", bin.display()),
        ));
        Some(Self {
            argv: shipped.command.iter().map(|a| files.map(a)).collect(),
            env,
            job_name: text(&shipped.job["metadata"]["name"], "the Job's name").to_string(),
            completions: shipped.completions,
            lab,
            dir,
        })
    }

    /// The claim every pod mounts (the driver's --runs-dir).
    fn claim(&self) -> PathBuf {
        self.dir.path().join("claim")
    }

    /// Starts the pod of completion index `index`, as the kubelet would.
    fn start(&self, index: usize) -> Child {
        let ns = if index == 0 {
            self.lab.driver_ns()
        } else {
            self.lab.executor_ns(index)
        };
        Command::new("ip")
            .args(["netns", "exec", &ns])
            .args(&self.argv)
            .env_clear()
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .env("JOB_COMPLETION_INDEX", index.to_string())
            .env("HOSTNAME", format!("{}-{index}", self.job_name))
            .current_dir(self.dir.path())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap()
    }

    /// Starts every pod, executors first (ranks start in any order).
    fn start_all(&self) -> Vec<Child> {
        let mut pods: Vec<Child> = (1..self.completions).rev().map(|i| self.start(i)).collect();
        pods.insert(0, self.start(0));
        pods
    }
}

/// Polls `cond` every 20 ms until it holds; fails if that takes more than
/// [`support::PATIENCE`] from `since`.
fn poll_until(what: &str, since: std::time::Instant, mut cond: impl FnMut() -> bool) {
    while !cond() {
        assert!(since.elapsed() < support::PATIENCE, "timed out waiting for {what}");
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}

/// A pod's end: its status, stdout and stderr.
fn ended(child: Child) -> (std::process::ExitStatus, String, String) {
    let out = child.wait_with_output().unwrap();
    let text = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
    (out.status, text(&out.stdout), text(&out.stderr))
}

/// Waits for every pod (index order) to exit 0 and returns the driver's
/// stdout; if the driver's pod fails, stops the others (which would wait
/// for it for their whole join timeout) and panics with its output.
fn all_succeed(pods: Vec<Child>) -> String {
    let mut pods = pods.into_iter();
    let (status, driver_out, driver_err) = ended(pods.next().unwrap());
    if !status.success() {
        for mut executor in pods {
            let _ = executor.kill();
        }
        panic!("the driver's pod failed: {status}\n{driver_out}\n{driver_err}");
    }
    assert!(driver_out.contains("Kubernetes rank 0"), "{driver_out}");
    assert!(!driver_err.contains("executor lost"), "{driver_err}");
    assert!(!driver_err.contains("readable by every user"), "{driver_err}");
    for (index, pod) in pods.enumerate() {
        let (status, stdout, stderr) = ended(pod);
        assert!(status.success(), "pod {}: {status}\n{stdout}\n{stderr}", index + 1);
        assert!(
            stdout.contains("the run is over: its job is done"),
            "pod {}: {stdout}",
            index + 1
        );
    }
    driver_out
}

/// The shipped manifests fit together, and their pods, started executors
/// first, each in its own namespace, run a job to the end over TLS with the
/// shared secret: every pod exits 0 and the model is on the claim.
#[test]
fn the_shipped_indexed_job_runs_a_job_as_its_pods_would() {
    let shipped = Shipped::load();
    let Some(pods) = Pods::up(&shipped, 215, &small_job("k8s", "async", 3)) else {
        return;
    };
    let driver_out = all_succeed(pods.start_all());
    let executors = shipped.completions - 1;
    assert!(
        driver_out.contains(&format!("{executors} executors registered")),
        "{driver_out}"
    );
    assert!(driver_out.contains("job 1 (k8s) done"), "{driver_out}");
    let model = pods.claim().join("1-k8s/model.safetensors");
    assert!(model.exists(), "the model is on the claim: {}", model.display());
}

/// The driver's pod killed mid-job ends every executor pod (non-zero, on
/// their own, within their rejoin timeout); the Job applied again, its
/// unchanged command (`--restartable`) resumes the job from the claim's
/// checkpoint and finishes it.
#[test]
fn a_killed_driver_pod_ends_every_pod_and_the_job_applied_again_resumes() {
    let shipped = Shipped::load();
    let Some(pods) = Pods::up(&shipped, 216, &small_job("k8s-restart", "async", 60)) else {
        return;
    };
    let mut running = pods.start_all();
    // Every completed epoch is checkpointed: kill once the first one is.
    let checkpoints = pods.claim().join("checkpoints");
    let checkpointed = || {
        let names = std::fs::read_dir(&checkpoints).into_iter().flatten().flatten();
        // Written to a temporary name, then renamed: only the final name counts.
        names
            .into_iter()
            .any(|e| e.file_name().to_string_lossy().ends_with(".checkpoint"))
    };
    let start = std::time::Instant::now();
    poll_until("the first checkpoint", start, || {
        if let Ok(Some(status)) = running[0].try_wait() {
            panic!("the driver's pod ended before its first checkpoint: {status}");
        }
        checkpointed()
    });
    running[0].kill().unwrap();
    let mut running = running.into_iter();
    let (status, _, _) = ended(running.next().unwrap());
    assert!(!status.success());
    // Within PATIENCE, well short of their 300 s join timeout: the rejoin
    // timeout (5 s) is what ends them.
    let killed = std::time::Instant::now();
    for (index, mut pod) in running.enumerate() {
        poll_until(&format!("pod {} to exit without its driver", index + 1), killed, || {
            pod.try_wait().unwrap().is_some()
        });
        let (status, stdout, stderr) = ended(pod);
        assert!(
            !status.success(),
            "pod {} succeeded without its driver: {stdout}",
            index + 1
        );
        assert!(stderr.contains("no driver at"), "pod {}: {stderr}", index + 1);
    }

    let driver_out = all_succeed(pods.start_all());
    assert!(driver_out.contains("recovering job 1"), "{driver_out}");
    assert!(driver_out.contains("job 1 (k8s-restart) done"), "{driver_out}");
}
