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
/// one namespace per executor. Addresses: the root side is 10.213.0.1 and
/// reaches the driver at 10.213.0.2; executor `i` (from 1) reaches it at
/// 10.213.i.1. Deleted when dropped.
pub struct NetLab {
    tag: String,
    executors: usize,
}

impl NetLab {
    /// Builds the namespaces and links.
    pub fn create(executors: usize) -> Result<Self, String> {
        for tool in ["ip", "iptables"] {
            if Command::new(tool).arg("-V").output().is_err() {
                return Err(format!("`{tool}` is not installed (apt-get install iproute2 iptables)"));
            }
        }
        let lab = Self {
            tag: format!("dd{}", std::process::id() % 10_000_000),
            executors,
        };
        run(&["ip", "netns", "add", &lab.driver_ns()])?;
        lab.link(None, "10.213.0.1", "10.213.0.2")?;
        for i in 1..=executors {
            run(&["ip", "netns", "add", &lab.executor_ns(i)])?;
            let subnet = format!("10.213.{i}");
            lab.link(
                Some(&lab.executor_ns(i)),
                &format!("{subnet}.2"),
                &format!("{subnet}.1"),
            )?;
        }
        Ok(lab)
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
        for i in 1..=self.executors {
            let _ = run(&["ip", "netns", "del", &self.executor_ns(i)]);
        }
    }
}
