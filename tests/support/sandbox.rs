//! Kernel sandboxes for the fault suite: a memory cgroup to get an executor
//! OOM-killed, network namespaces joined by veth pairs whose traffic
//! iptables can drop, and a small tmpfs to fill. All need root; `create` says
//! why when it cannot, and the test hands that to [`super::cannot_run`].

use std::path::PathBuf;
use std::process::Command;

/// A memory cgroup (v1 or v2) with a limit; removed when dropped.
pub struct MemoryCgroup {
    dir: PathBuf,
    v2: bool,
}

impl MemoryCgroup {
    /// A new cgroup limited to `limit` bytes of memory.
    pub fn create(limit: u64) -> Result<Self, String> {
        let name = format!("deepdist-oom-{}", std::process::id());
        let v1 = PathBuf::from("/sys/fs/cgroup/memory");
        let (dir, v2) = if v1.join("memory.limit_in_bytes").exists() {
            (v1.join(name), false)
        } else if PathBuf::from("/sys/fs/cgroup/cgroup.controllers").exists() {
            (PathBuf::from("/sys/fs/cgroup").join(name), true)
        } else {
            return Err("no memory cgroup controller is mounted".into());
        };
        std::fs::create_dir(&dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
        let cgroup = Self { dir, v2 };
        let limit_file = if v2 { "memory.max" } else { "memory.limit_in_bytes" };
        cgroup.write(limit_file, &limit.to_string())?;
        if v2 {
            // Without swap off the kernel would swap instead of killing.
            let _ = cgroup.write("memory.swap.max", "0");
        }
        Ok(cgroup)
    }

    fn write(&self, file: &str, value: &str) -> Result<(), String> {
        let path = self.dir.join(file);
        std::fs::write(&path, value).map_err(|e| format!("cannot write {}: {e}", path.display()))
    }

    /// Moves process `pid` into the cgroup.
    pub fn add(&self, pid: u32) -> Result<(), String> {
        self.write("cgroup.procs", &pid.to_string())
    }

    /// Processes the kernel's OOM killer has killed in the cgroup.
    pub fn oom_kills(&self) -> u64 {
        let file = if self.v2 { "memory.events" } else { "memory.oom_control" };
        let text = std::fs::read_to_string(self.dir.join(file)).unwrap_or_default();
        text.lines()
            .find_map(|l| l.strip_prefix("oom_kill "))
            .and_then(|n| n.trim().parse().ok())
            .unwrap_or(0)
    }
}

impl Drop for MemoryCgroup {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir(&self.dir);
    }
}

/// A tmpfs of a few pages, mounted on a temporary directory; unmounted when
/// dropped.
pub struct SmallDisk {
    dir: tempfile::TempDir,
}

impl SmallDisk {
    /// Mounts a tmpfs of `bytes`.
    pub fn create(bytes: u64) -> Result<Self, String> {
        let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
        let path = dir.path().display().to_string();
        run(&["mount", "-t", "tmpfs", "-o", &format!("size={bytes}"), "tmpfs", &path])?;
        Ok(Self { dir })
    }

    /// Where it is mounted.
    pub fn path(&self) -> &std::path::Path {
        self.dir.path()
    }

    /// Fills it with `name` until a write fails with ENOSPC.
    pub fn fill(&self, name: &str) {
        use std::io::Write;
        let mut file = std::fs::File::create(self.path().join(name)).unwrap();
        let block = vec![0u8; 4096];
        loop {
            match file.write_all(&block).and_then(|()| file.sync_all()) {
                Ok(()) => {}
                Err(e) if e.raw_os_error() == Some(28) => return,
                Err(e) => panic!("filling the tmpfs: {e}"),
            }
        }
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = run(&["umount", "-l", &self.dir.path().display().to_string()]);
    }
}

/// Runs `ip`/`iptables` and says what failed.
fn run(args: &[&str]) -> Result<(), String> {
    let out = Command::new(args[0])
        .args(&args[1..])
        .output()
        .map_err(|e| format!("cannot run {}: {e}", args[0]))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "`{}` failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

/// A driver namespace joined by veth pairs to this (root) namespace and to
/// one namespace per executor, in the network 10.`net`.0.0/16 (one per test
/// binary that uses a lab, so two binaries never route the same addresses).
/// Addresses: the root side is 10.`net`.0.1 and reaches the driver at
/// 10.`net`.0.2; executor `i` (from 1) is 10.`net`.i.2 and reaches the
/// driver at 10.`net`.i.1. Deleted when dropped.
pub struct NetLab {
    tag: String,
    net: u8,
    executors: usize,
}

impl NetLab {
    /// Builds the namespaces and links in 10.`net`.0.0/16.
    pub fn create(net: u8, executors: usize) -> Result<Self, String> {
        for tool in ["ip", "iptables"] {
            if Command::new(tool).arg("-V").output().is_err() {
                return Err(format!("`{tool}` is not installed (apt-get install iproute2 iptables)"));
            }
        }
        let lab = Self {
            // Unique per test binary and lab; short enough for interface names.
            tag: format!("d{net}p{}", std::process::id() % 1_000_000),
            net,
            executors,
        };
        run(&["ip", "netns", "add", &lab.driver_ns()])?;
        lab.link(None, &lab.ip(0, 1), &lab.driver_ip_from(0))?;
        for i in 1..=executors {
            run(&["ip", "netns", "add", &lab.executor_ns(i)])?;
            lab.link(Some(&lab.executor_ns(i)), &lab.executor_ip(i), &lab.driver_ip_from(i))?;
        }
        Ok(lab)
    }

    fn ip(&self, subnet: usize, host: u8) -> String {
        format!("10.{}.{subnet}.{host}", self.net)
    }

    /// The driver's address as executor `i` reaches it (0: as this, the
    /// root, namespace reaches it).
    pub fn driver_ip_from(&self, i: usize) -> String {
        if i == 0 { self.ip(0, 2) } else { self.ip(i, 1) }
    }

    /// Executor `i`'s own address (from 1), as the driver reaches it.
    pub fn executor_ip(&self, i: usize) -> String {
        self.ip(i, 2)
    }

    /// The driver's namespace.
    pub fn driver_ns(&self) -> String {
        format!("{}d", self.tag)
    }

    /// Executor `i`'s namespace (from 1).
    pub fn executor_ns(&self, i: usize) -> String {
        format!("{}e{i}", self.tag)
    }

    /// A veth pair from `near` (a namespace, or the root one) with address
    /// `near_ip` to the driver's namespace with `driver_ip`.
    fn link(&self, near: Option<&str>, near_ip: &str, driver_ip: &str) -> Result<(), String> {
        let suffix = near.map_or("r".to_string(), |ns| ns[self.tag.len()..].to_string());
        let (a, b) = (format!("{}{suffix}a", self.tag), format!("{}{suffix}b", self.tag));
        run(&["ip", "link", "add", &a, "type", "veth", "peer", "name", &b])?;
        let driver_ns = self.driver_ns();
        run(&["ip", "link", "set", &b, "netns", &driver_ns])?;
        run(&[
            "ip",
            "-n",
            &driver_ns,
            "addr",
            "add",
            &format!("{driver_ip}/24"),
            "dev",
            &b,
        ])?;
        run(&["ip", "-n", &driver_ns, "link", "set", &b, "up"])?;
        run(&["ip", "-n", &driver_ns, "link", "set", "lo", "up"])?;
        if let Some(ns) = near {
            run(&["ip", "link", "set", &a, "netns", ns])?;
        }
        // `ip -n <ns>` works in the named namespace; without it, in this one.
        let ip = |args: &[&str]| match near {
            Some(ns) => run(&[&["ip", "-n", ns], args].concat()),
            None => run(&[&["ip"], args].concat()),
        };
        ip(&["addr", "add", &format!("{near_ip}/24"), "dev", &a])?;
        ip(&["link", "set", &a, "up"])?;
        ip(&["link", "set", "lo", "up"])
    }

    /// The command prefix that runs a program inside namespace `ns`.
    pub fn exec_in(ns: &str) -> Vec<String> {
        ["ip", "netns", "exec", ns].map(String::from).to_vec()
    }

    /// Makes `name` resolve to the driver in every namespace of the lab (to
    /// the driver's address as each one reaches it), as a headless Service
    /// names a pod: `ip netns exec` mounts /etc/netns/NS/hosts over /etc/hosts.
    pub fn name_driver(&self, name: &str) -> Result<(), String> {
        for i in 0..=self.executors {
            let ns = if i == 0 { self.driver_ns() } else { self.executor_ns(i) };
            let dir = format!("/etc/netns/{ns}");
            let hosts = format!("127.0.0.1 localhost\n{} {name}\n", self.driver_ip_from(i));
            std::fs::create_dir_all(&dir)
                .and_then(|()| std::fs::write(format!("{dir}/hosts"), hosts))
                .map_err(|e| format!("cannot write {dir}/hosts: {e}"))?;
        }
        Ok(())
    }

    /// Drops every packet in and out of executor `i`'s namespace.
    pub fn cut(&self, i: usize) -> Result<(), String> {
        self.iptables(i, "-A")
    }

    /// Lets executor `i`'s traffic through again.
    pub fn heal(&self, i: usize) -> Result<(), String> {
        self.iptables(i, "-D")
    }

    fn iptables(&self, i: usize, op: &str) -> Result<(), String> {
        let ns = self.executor_ns(i);
        for chain in ["INPUT", "OUTPUT"] {
            run(&["ip", "netns", "exec", &ns, "iptables", op, chain, "-j", "DROP"])?;
        }
        Ok(())
    }
}

impl Drop for NetLab {
    fn drop(&mut self) {
        // Deleting a namespace deletes the veth ends inside it, and so the pairs.
        let _ = run(&["ip", "netns", "del", &self.driver_ns()]);
        let _ = std::fs::remove_dir_all(format!("/etc/netns/{}", self.driver_ns()));
        for i in 1..=self.executors {
            let _ = run(&["ip", "netns", "del", &self.executor_ns(i)]);
            let _ = std::fs::remove_dir_all(format!("/etc/netns/{}", self.executor_ns(i)));
        }
    }
}

/// OpenSSH's sshd in a network namespace, on its own host key, letting in
/// one client key it generated; an ssh config names it `alias`. Killed
/// when dropped.
pub struct Sshd {
    child: std::process::Child,
}

impl Sshd {
    /// Starts sshd in `ns` on `ip:22` with keys and config in `dir`, and
    /// appends a `Host alias` entry for it to `dir/ssh_config`. Returns once
    /// sshd says it listens.
    pub fn start(ns: &str, ip: &str, alias: &str, dir: &std::path::Path) -> Result<Self, String> {
        use std::io::BufRead;
        let sshd = ["/usr/sbin/sshd", "/usr/bin/sshd"]
            .into_iter()
            .find(|p| std::path::Path::new(p).exists())
            .ok_or("sshd is not installed (apt-get install openssh-server)")?;
        for tool in ["ssh", "ssh-keygen"] {
            if Command::new(tool).arg("-V").output().is_err() {
                return Err(format!("`{tool}` is not installed (apt-get install openssh-client)"));
            }
        }
        let keys = dir.join(alias);
        std::fs::create_dir_all(&keys).map_err(|e| e.to_string())?;
        for key in ["host_key", "client_key"] {
            let path = keys.join(key);
            if !path.exists() {
                run(&[
                    "ssh-keygen",
                    "-q",
                    "-t",
                    "ed25519",
                    "-N",
                    "",
                    "-f",
                    &path.display().to_string(),
                ])?;
            }
        }
        std::fs::copy(keys.join("client_key.pub"), keys.join("authorized_keys")).map_err(|e| e.to_string())?;
        let config = keys.join("sshd_config");
        std::fs::write(
            &config,
            format!(
                "ListenAddress {ip}:22\nHostKey {keys}/host_key\nAuthorizedKeysFile {keys}/authorized_keys\n\
                 PidFile {keys}/sshd.pid\nStrictModes no\nPermitRootLogin prohibit-password\n\
                 PasswordAuthentication no\nKbdInteractiveAuthentication no\nUsePAM no\n",
                keys = keys.display()
            ),
        )
        .map_err(|e| e.to_string())?;
        // sshd insists on its privilege-separation directory.
        std::fs::create_dir_all("/run/sshd").map_err(|e| format!("cannot create /run/sshd: {e}"))?;
        let mut child = Command::new("ip")
            .args(["netns", "exec", ns, sshd, "-D", "-e", "-f"])
            .arg(&config)
            .stderr(std::process::Stdio::piped())
            .spawn()
            .map_err(|e| format!("cannot start sshd: {e}"))?;
        let stderr = child.stderr.take().ok_or("sshd has no stderr")?;
        let mut lines = std::io::BufReader::new(stderr).lines();
        let mut said = String::new();
        loop {
            match lines.next() {
                Some(Ok(line)) if line.contains("Server listening") => break,
                Some(Ok(line)) => said.push_str(&line),
                _ => {
                    let _ = child.kill();
                    return Err(format!("sshd did not start: {said}"));
                }
            }
        }
        // Keep draining sshd's log so it never blocks on a full pipe.
        std::thread::spawn(move || lines.for_each(drop));
        let entry = format!(
            "Host {alias}\n  HostName {ip}\n  User root\n  IdentityFile {keys}/client_key\n  \
             StrictHostKeyChecking no\n  UserKnownHostsFile /dev/null\n  LogLevel ERROR\n",
            keys = keys.display()
        );
        let mut text = std::fs::read_to_string(dir.join("ssh_config")).unwrap_or_default();
        text.push_str(&entry);
        std::fs::write(dir.join("ssh_config"), text).map_err(|e| e.to_string())?;
        Ok(Self { child })
    }
}

impl Drop for Sshd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
