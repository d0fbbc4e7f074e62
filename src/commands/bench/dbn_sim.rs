//! `deepdist bench dbn --simulate`: the DBN grid on simulated clusters. A
//! DBN trains in stages (its RBMs, then fine-tuning the stack), so each run
//! simulates them in turn, every stage starting from the parameters the
//! ones before it trained and on its input passed through them; times add
//! up from the job's start, as the real grid's do. Each stage's costs are
//! measured here once per minibatch size (`scaling::measure`).

use std::collections::HashMap;
use std::time::Instant;

use deepdist_core::cpu::compute_pool;
use deepdist_core::data::cut::cut;
use deepdist_core::job::JobSpec;
use deepdist_sim::{CostModel, LinkModel, SimConfig, SimJob};

use super::dbn_grid::{THRESHOLDS, announce, grid_spec, times_to};
use super::dbn_report::GridRun;
use super::job::machine_cores;
use super::scaling::{load_sets, measure};
use crate::cli::DbnBenchArgs;

/// Runs every (executors, cores, partitions) combination in the simulator.
pub fn run_grid(base: &JobSpec, combos: &[(usize, usize, u32)], args: &DbnBenchArgs) -> anyhow::Result<Vec<GridRun>> {
    let link = LinkModel::parse(&args.link)
        .ok_or_else(|| anyhow::anyhow!("--link {}: expected e.g. 10gbit or 100mbit", args.link))?;
    let (base, train, test) = load_sets(base.clone(), &args.data)?;
    println!(
        "costs measured here; GEMM peak {:.1} GFLOP/s on 2 threads",
        deepdist_core::gemm::gemm_peak(2)
    );
    let mut costs = Costs::default();
    let mut runs = Vec::new();
    for (i, &(executors, cores, partitions)) in combos.iter().enumerate() {
        let spec = grid_spec(&base, partitions, THRESHOLDS[0], args.max_epochs);
        announce(
            i,
            combos.len(),
            &format!("simulated {executors} executors × {cores} cores, {partitions} partitions"),
        )?;
        let cut = cut(&spec.data, spec.train.seed, &train, &test)?;
        let sample = cut.train.head(5000);
        let stages = spec.stages().len();
        // (accuracy, seconds since the start) at every evaluation; an RBM's end has no accuracy.
        let mut points = Vec::new();
        let mut trained = Vec::new();
        let mut clock = 0.0;
        for index in 0..stages {
            let job = SimJob::stage(spec.clone(), index, &trained, &sample, &cut.partitions, &cut.eval)?;
            let batch = job.executor_batch(executors);
            let cost = costs.get(&job, index, batch, link, &sample, &trained)?;
            // Executors pass each partition through the stages below once
            // before training on it: the cluster's share of that, up front.
            clock += cost.input_s * job.train_examples() as f64 / (executors as f64 * cost.model.speedup(cores));
            let last = index + 1 == stages;
            let report = job.simulate(&SimConfig {
                executors,
                cores,
                cost: cost.model,
                // An RBM is scored by reconstruction, not accuracy: once, at its end.
                eval_every: if last { 0.25 } else { f64::from(job.stage.epochs) },
                stop_at_target: last,
                machine_threads: machine_cores(),
                machine: None,
                noise: false,
                server_shards: 1,
                shard_hosts: false,
            })?;
            if let Some(why) = &report.failed {
                print!("(stage {}: {why}) ", job.stage.name);
            }
            if last {
                points.extend(report.points.iter().map(|p| (Some(p.accuracy), clock + p.time_s)));
            } else {
                points.push((None, clock + report.time_s));
                trained.push(report.params);
            }
            clock += report.time_s;
        }
        let (time_to, best_accuracy) = times_to(&points, &THRESHOLDS);
        println!(
            "> 90% at {}, best {}",
            super::dbn_report::seconds(time_to[0]),
            super::dbn_report::percent(best_accuracy)
        );
        runs.push(GridRun {
            executors,
            cores,
            partitions,
            time_to: [time_to[0], time_to[1]],
            best_accuracy,
            elapsed_s: clock,
        });
    }
    Ok(runs)
}

/// A stage's measured costs.
#[derive(Clone, Copy)]
struct StageCost {
    model: CostModel,
    /// Seconds of passing one example through the stages below, one core.
    input_s: f64,
}

/// Costs measured once per (stage, minibatch): they do not depend on the
/// partitions or the cluster.
#[derive(Default)]
struct Costs(HashMap<(usize, usize), StageCost>);

impl Costs {
    fn get(
        &mut self,
        job: &SimJob,
        index: usize,
        batch: usize,
        link: LinkModel,
        sample: &deepdist_core::data::Dataset,
        trained: &[Vec<f32>],
    ) -> anyhow::Result<StageCost> {
        if let Some(cost) = self.0.get(&(index, batch)) {
            return Ok(*cost);
        }
        let model = measure(job, batch, link, 1.0)?;
        let input_s = if job.stage.input_layers == 0 {
            0.0
        } else {
            let kind = job.spec.kind()?;
            let started = Instant::now();
            compute_pool(Some(1))?.install(|| kind.input(&job.spec, index, trained, sample, true, 0))?;
            started.elapsed().as_secs_f64() / sample.len().max(1) as f64
        };
        let cost = StageCost { model, input_s };
        self.0.insert((index, batch), cost);
        Ok(cost)
    }
}
