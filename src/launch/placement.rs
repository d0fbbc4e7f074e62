//! Where this process sits in a run, from the environment its cluster
//! manager gives every task. One [`Manager`] per launcher; the first that
//! recognises the environment wins, innermost first (an `mpirun` inside a
//! Slurm allocation still sees Slurm's variables).

use anyhow::Context;

use super::hostlist;

/// This task's place in the run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Placement {
    /// Which manager said so, for messages.
    pub manager: &'static str,
    /// This task's rank: 0 runs the driver, the others executors.
    pub rank: usize,
    /// Ranks in the run, when the manager says.
    pub size: Option<usize>,
    /// The host rank 0 runs on, when the manager says.
    pub driver_host: Option<String>,
    /// Cores given to this task, when the manager says.
    pub cores: Option<usize>,
    /// Tasks of this run on this node, when the manager says.
    pub tasks_here: Option<usize>,
}

/// The environment as a lookup, so detection can be tested without one.
pub type Env<'a> = &'a dyn Fn(&str) -> Option<String>;

/// A cluster manager deepdist can take its role from.
pub trait Manager: Sync {
    /// This task's placement, if the environment is this manager's.
    fn detect(&self, env: Env) -> anyhow::Result<Option<Placement>>;
}

/// The managers, innermost launcher first; deepdist's own variables, set
/// on purpose by a launcher such as the Spark distributor, before all.
pub const MANAGERS: &[&dyn Manager] = &[&Explicit, &OPEN_MPI, &PMI, &Slurm, &Kubernetes];

/// The first manager's placement, or `None` outside any.
pub fn detect(env: Env) -> anyhow::Result<Option<Placement>> {
    for manager in MANAGERS {
        if let Some(placement) = manager.detect(env)? {
            return Ok(Some(placement));
        }
    }
    Ok(None)
}

/// The number in variable `name`, if set.
fn number(env: Env, name: &str) -> anyhow::Result<Option<usize>> {
    env(name)
        .map(|v| {
            v.trim()
                .parse::<usize>()
                .with_context(|| format!("${name} is {v:?}, not a number"))
        })
        .transpose()
}

/// Checks a rank against its size.
fn ranked(manager: &'static str, rank: usize, size: Option<usize>) -> anyhow::Result<Placement> {
    if let Some(size) = size {
        anyhow::ensure!(rank < size, "{manager}: rank {rank} is not below the run's size {size}");
    }
    Ok(Placement {
        manager,
        rank,
        size,
        driver_host: None,
        cores: None,
        tasks_here: None,
    })
}

/// Slurm's `srun` (alone or in an `sbatch` script).
pub struct Slurm;

impl Manager for Slurm {
    fn detect(&self, env: Env) -> anyhow::Result<Option<Placement>> {
        let Some(rank) = number(env, "SLURM_PROCID")? else {
            return Ok(None);
        };
        let size = match number(env, "SLURM_STEP_NUM_TASKS")? {
            Some(n) => Some(n),
            None => number(env, "SLURM_NTASKS")?,
        };
        let mut placement = ranked("Slurm", rank, size)?;
        // Rank 0 of a step runs on the step's first node.
        if let Some(list) = env("SLURM_STEP_NODELIST").or_else(|| env("SLURM_JOB_NODELIST")) {
            let hosts = hostlist::expand(&list).with_context(|| format!("cannot read Slurm's node list {list:?}"))?;
            placement.driver_host = hosts.into_iter().next();
        }
        placement.cores = number(env, "SLURM_CPUS_PER_TASK")?;
        if let (Some(spec), Some(node)) = (env("SLURM_STEP_TASKS_PER_NODE"), number(env, "SLURM_NODEID")?) {
            let counts =
                hostlist::tasks_per_node(&spec).with_context(|| format!("cannot read Slurm's task counts {spec:?}"))?;
            placement.tasks_here = counts.get(node).copied();
        }
        Ok(Some(placement))
    }
}

/// An MPI launcher: its rank, size and ranks-on-this-node variables.
pub struct Mpi {
    name: &'static str,
    rank: &'static str,
    size: &'static str,
    local_size: &'static str,
}

/// Open MPI's `mpirun`.
pub const OPEN_MPI: Mpi = Mpi {
    name: "Open MPI",
    rank: "OMPI_COMM_WORLD_RANK",
    size: "OMPI_COMM_WORLD_SIZE",
    local_size: "OMPI_COMM_WORLD_LOCAL_SIZE",
};

/// MPICH's and Intel MPI's Hydra (`mpiexec`), and other PMI launchers.
pub const PMI: Mpi = Mpi {
    name: "PMI",
    rank: "PMI_RANK",
    size: "PMI_SIZE",
    local_size: "MPI_LOCALNRANKS",
};

impl Manager for Mpi {
    fn detect(&self, env: Env) -> anyhow::Result<Option<Placement>> {
        let Some(rank) = number(env, self.rank)? else {
            return Ok(None);
        };
        let mut placement = ranked(self.name, rank, number(env, self.size)?)?;
        placement.tasks_here = number(env, self.local_size)?;
        Ok(Some(placement))
    }
}

/// A launcher that says it all: `DEEPDIST_RANK`, `DEEPDIST_SIZE` and
/// `DEEPDIST_CORES` (python/'s Spark distributor sets them in its tasks,
/// whose own cluster's variables may say something else).
pub struct Explicit;

impl Manager for Explicit {
    fn detect(&self, env: Env) -> anyhow::Result<Option<Placement>> {
        let Some(rank) = number(env, "DEEPDIST_RANK")? else {
            return Ok(None);
        };
        let mut placement = ranked("DEEPDIST_RANK", rank, number(env, "DEEPDIST_SIZE")?)?;
        placement.cores = number(env, "DEEPDIST_CORES")?;
        Ok(Some(placement))
    }
}

/// A Kubernetes Indexed Job (deploy/k8s/): the completion index is the rank.
pub struct Kubernetes;

impl Manager for Kubernetes {
    fn detect(&self, env: Env) -> anyhow::Result<Option<Placement>> {
        let Some(rank) = number(env, "JOB_COMPLETION_INDEX")? else {
            return Ok(None);
        };
        ranked("Kubernetes", rank, None).map(Some)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn detect_in(vars: &[(&str, &str)]) -> anyhow::Result<Option<Placement>> {
        let lookup = |name: &str| vars.iter().find(|(k, _)| *k == name).map(|(_, v)| v.to_string());
        detect(&lookup)
    }

    #[test]
    fn deepdists_own_variables_win_over_the_clusters() {
        let p = detect_in(&[
            ("DEEPDIST_RANK", "2"),
            ("DEEPDIST_SIZE", "3"),
            ("DEEPDIST_CORES", "4"),
            ("SLURM_PROCID", "0"),
        ])
        .unwrap()
        .unwrap();
        assert_eq!(
            (p.manager, p.rank, p.size, p.cores),
            ("DEEPDIST_RANK", 2, Some(3), Some(4))
        );
        assert!(detect_in(&[("DEEPDIST_RANK", "3"), ("DEEPDIST_SIZE", "3")]).is_err());
        assert!(detect_in(&[("DEEPDIST_RANK", "one")]).is_err());
    }

    #[test]
    fn no_manager_means_no_placement() {
        assert_eq!(detect_in(&[("HOME", "/root")]).unwrap(), None);
    }

    #[test]
    fn slurm_gives_rank_size_the_first_node_and_cores() {
        let p = detect_in(&[
            ("SLURM_PROCID", "2"),
            ("SLURM_NTASKS", "5"),
            ("SLURM_JOB_NODELIST", "node[01-04,07]"),
            ("SLURM_CPUS_PER_TASK", "8"),
            ("SLURM_STEP_TASKS_PER_NODE", "2(x2),1"),
            ("SLURM_NODEID", "1"),
        ])
        .unwrap()
        .unwrap();
        assert_eq!(
            p,
            Placement {
                manager: "Slurm",
                rank: 2,
                size: Some(5),
                driver_host: Some("node01".into()),
                cores: Some(8),
                tasks_here: Some(2),
            }
        );
    }

    #[test]
    fn the_step_node_list_wins_over_the_allocations() {
        let p = detect_in(&[
            ("SLURM_PROCID", "0"),
            ("SLURM_JOB_NODELIST", "node[01-04]"),
            ("SLURM_STEP_NODELIST", "node[03-04]"),
        ])
        .unwrap()
        .unwrap();
        assert_eq!(p.driver_host.as_deref(), Some("node03"));
    }

    #[test]
    fn mpirun_inside_an_allocation_takes_mpis_rank() {
        let p = detect_in(&[
            ("SLURM_PROCID", "0"),
            ("SLURM_JOB_NODELIST", "vm"),
            ("OMPI_COMM_WORLD_RANK", "1"),
            ("OMPI_COMM_WORLD_SIZE", "3"),
            ("OMPI_COMM_WORLD_LOCAL_SIZE", "3"),
        ])
        .unwrap()
        .unwrap();
        assert_eq!(
            (p.manager, p.rank, p.size, p.tasks_here),
            ("Open MPI", 1, Some(3), Some(3))
        );
        let p = detect_in(&[("PMI_RANK", "0"), ("PMI_SIZE", "4")]).unwrap().unwrap();
        assert_eq!((p.manager, p.rank, p.size), ("PMI", 0, Some(4)));
    }

    #[test]
    fn a_kubernetes_index_is_the_rank() {
        let p = detect_in(&[("JOB_COMPLETION_INDEX", "0")]).unwrap().unwrap();
        assert_eq!((p.manager, p.rank, p.size), ("Kubernetes", 0, None));
    }

    #[test]
    fn nonsense_in_the_environment_is_an_error_that_names_the_variable() {
        let e = detect_in(&[("SLURM_PROCID", "first")]).unwrap_err().to_string();
        assert!(e.contains("SLURM_PROCID"), "{e}");
        let e = detect_in(&[("OMPI_COMM_WORLD_RANK", "3"), ("OMPI_COMM_WORLD_SIZE", "3")])
            .unwrap_err()
            .to_string();
        assert!(e.contains("rank 3"), "{e}");
        assert!(detect_in(&[("SLURM_PROCID", "0"), ("SLURM_JOB_NODELIST", "n[1-")]).is_err());
    }
}
