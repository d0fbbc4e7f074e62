"""Runs a deepdist job inside a Spark cluster, in the way Spark's
TorchDistributor runs PyTorch: one barrier stage whose tasks start the
training processes.

The deepdist driver runs here, on the Spark driver's host, as rank 0 of
`deepdist launch`; each barrier task runs one executor rank against it. The
driver stays outside the stage on purpose: when a task is lost, Spark fails
and retries the whole barrier stage, and the retried tasks' executors join
the same driver, which still holds the parameters and the job's progress —
the job goes on where it was instead of starting over.
"""

import glob
import json
import os
import secrets
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field

from . import logs
from .jobfile import data_table, with_data


class DistributorError(RuntimeError):
    """The job could not run, or ended other than done; the message says why."""


@dataclass
class Summary:
    """What a finished job produced."""

    #: The job's final test accuracy (supervised jobs), in [0, 1].
    final_accuracy: float
    #: Epochs evaluated.
    epochs: int
    #: The saved model (`model.safetensors`).
    model: str
    #: The job's output directory (`metrics.jsonl`, the model).
    output_dir: str
    #: Seconds from `run()` to the first evaluated epoch.
    first_epoch_s: float
    #: Every `metrics.jsonl` line.
    metrics: list = field(default_factory=list)


def _die_with_parent():
    """In a task's child: SIGTERM when the Python worker that started it
    dies (Spark kills the workers of a failed barrier stage)."""
    import ctypes
    import signal

    ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


def _run_rank(binary, args, env, secret, prefix, relay):
    """Runs one executor rank; its output goes, each line prefixed, to the
    relay at `relay` and to this task's log; its last lines come back with
    its exit status."""
    tail = []
    out = logs.connect(relay, secret)
    with subprocess.Popen(
        [binary, *args],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=env,
        preexec_fn=_die_with_parent,
    ) as p:
        p.stdin.write(secret)
        p.stdin.close()
        for line in p.stdout:
            print(prefix + line, end="", flush=True)
            if out is not None:
                try:
                    out.write(prefix + line)
                    out.flush()
                except OSError:
                    out = None
            tail = (tail + [line.rstrip()])[-40:]
        return p.wait(), tail


class Distributor:
    """Trains `job` (a job file's path) with `num_executors` executors, each a
    task of one barrier stage.

    `binary` is the deepdist binary on this host (default: `deepdist` on the
    PATH); with `ship=True` it is sent to the nodes with `SparkContext.addFile`,
    otherwise the same path must exist on every node. Each executor gets the
    task's cores (`spark.task.cpus`, or `cores_per_executor`). `runs_dir` keeps
    the job's outputs (default: a new temporary directory). `data_path`, where
    `run(df)` writes the DataFrame as Parquet, must be a directory every node
    sees under the same path (NFS or similar; deepdist does not read HDFS).
    `log` receives every line of the driver's output.
    """

    def __init__(
        self,
        job,
        num_executors,
        binary=None,
        *,
        ship=True,
        cores_per_executor=None,
        runs_dir=None,
        data_path=None,
        advertise=None,
        tls=None,
        wait_executors_s=300,
        spark=None,
        log=print,
    ):
        if num_executors < 1:
            raise ValueError("num_executors must be at least 1")
        self.job = job
        self.num_executors = int(num_executors)
        self.binary = binary or shutil.which("deepdist")
        if not self.binary or not os.path.isfile(self.binary):
            raise DistributorError(f"no deepdist binary at {self.binary!r}: pass binary=PATH")
        self.ship = ship
        self.cores_per_executor = cores_per_executor
        self.runs_dir = runs_dir
        self.data_path = data_path
        self.advertise = advertise
        self.tls = tls
        self.wait_executors_s = wait_executors_s
        self.spark = spark
        self.log = log

    # -- Spark ---------------------------------------------------------------

    def _session(self):
        if self.spark is not None:
            return self.spark
        from pyspark.sql import SparkSession

        return SparkSession.getActiveSession() or SparkSession.builder.getOrCreate()

    def _check_cluster(self, sc):
        conf = sc.getConf()
        if conf.get("spark.dynamicAllocation.enabled", "false").lower() == "true":
            raise DistributorError(
                "barrier mode needs every task at once and Spark refuses it with dynamic allocation: "
                "set spark.dynamicAllocation.enabled=false"
            )
        task_cpus = int(conf.get("spark.task.cpus", "1"))
        slots = sc.defaultParallelism // max(task_cpus, 1)
        if self.num_executors > slots:
            raise DistributorError(
                f"{self.num_executors} executors need {self.num_executors} task slots at once (barrier mode), "
                f"but the cluster has {slots} ({sc.defaultParallelism} cores, spark.task.cpus={task_cpus})"
            )
        return task_cpus

    # -- data ----------------------------------------------------------------

    def _write_data(self, job_text, df, test_df, test_fraction, label_column, work):
        path = self.data_path or os.path.join(work, "data")
        if test_df is None:
            df, test_df = df.randomSplit([1.0 - test_fraction, test_fraction], seed=1)
        if label_column not in df.columns:
            raise DistributorError(f"the DataFrame has no label column {label_column!r} (columns: {df.columns})")
        df.write.mode("overwrite").parquet(os.path.join(path, "train"))
        test_df.write.mode("overwrite").parquet(os.path.join(path, "test"))
        data = {k: v for k, v in data_table(job_text).items() if k not in ("format", "path", "label_column")}
        data.update(format="parquet", path=os.path.abspath(path), label_column=label_column, shared=True)
        return with_data(job_text, data)

    # -- the run -------------------------------------------------------------

    def run(self, df=None, *, test_df=None, test_fraction=0.1, label_column="label"):
        """Trains the job — on `df` (and `test_df`, else a `test_fraction`
        split of `df`) when given, else on the job file's own data — and
        returns its `Summary`; raises `DistributorError` when it fails."""
        started = time.monotonic()
        spark = self._session()
        sc = spark.sparkContext
        task_cpus = self._check_cluster(sc)
        cores = int(self.cores_per_executor or task_cpus)
        work = tempfile.mkdtemp(prefix="deepdist-spark-")
        runs = os.path.abspath(self.runs_dir or os.path.join(work, "runs"))
        with open(self.job) as f:
            job_text = f.read()
        if df is not None:
            job_text = self._write_data(job_text, df, test_df, test_fraction, label_column, work)
        job_path = os.path.join(work, "job.toml")
        with open(job_path, "w") as f:
            f.write(job_text)
        # The secret reaches the driver in a private file and the tasks in the
        # stage's closure, never in Spark's configuration (the UI shows that).
        secret = secrets.token_hex(32)
        secret_file = os.path.join(work, "secret")
        fd = os.open(secret_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(secret)
        rendezvous = os.path.join(work, "driver-address")
        size = self.num_executors + 1
        host = self.advertise or socket.gethostname()
        transport = self._transport_args()
        driver_cmd = [
            self.binary, "launch", job_path, "--port", "0", "--rendezvous", rendezvous,
            "--advertise", host, "--executors", str(self.num_executors),
            "--wait-executors-s", str(self.wait_executors_s), "--runs-dir", runs,
            "--secret-file", secret_file, *transport,
        ]
        env = dict(os.environ, DEEPDIST_RANK="0", DEEPDIST_SIZE=str(size))
        driver = subprocess.Popen(driver_cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
        output = []
        submitted = []

        def follow():
            for line in driver.stdout:
                output.append(line.rstrip())
                if " submitted" in line and not submitted:
                    submitted.append(time.monotonic())
                self.log("[deepdist driver] " + line.rstrip())

        follower = threading.Thread(target=follow, daemon=True)
        follower.start()
        address = self._await_address(rendezvous, driver, output)
        relay = logs.LogRelay(secret, self.log)
        group = f"deepdist-{os.path.basename(work)}"
        task = self._task(sc, address, (host, relay.port), cores, size, secret)
        stage = _Stage(sc, group, task, self.num_executors)
        try:
            return self._follow(driver, follower, stage, output, runs, started, submitted)
        finally:
            relay.close()

    def _follow(self, driver, follower, stage, output, runs, started, submitted):
        """Runs the stage while the driver runs the job; the job's summary."""
        stage.start()
        while (state := driver.poll()) is None:
            if stage.failed():
                # Spark gave up on the stage (its retries spent): no executors
                # will come, so the job is cancelled (its model so far saved).
                driver.terminate()
                driver.wait()
                follower.join(timeout=10)
                raise DistributorError(f"the executors' Spark stage failed: {stage.error}")
            time.sleep(0.2)
        follower.join(timeout=10)
        # Told the run is over, the executors leave at once; a rank that
        # cannot (its node cut off) is not waited for long.
        stage.finish(timeout=5)
        if state != 0:
            # The job's own error, as the driver's summary gives it.
            why = next((l.strip()[len("error") :].strip() for l in output if l.strip().startswith("error ")), None)
            raise DistributorError(
                f"the deepdist job failed: {why or 'its driver exited ' + str(state)}\n" + "\n".join(output[-20:])
            )
        return self._summary(runs, started, submitted)

    def _transport_args(self):
        if not self.tls:
            # The shared secret authenticates every connection; TLS (tls=
            # {"cert", "key", "ca"}) also keeps frames from being read or changed.
            return ["--insecure-plaintext"]
        return ["--tls-cert", self.tls["cert"], "--tls-key", self.tls["key"], "--tls-ca", self.tls["ca"]]

    @staticmethod
    def _await_address(rendezvous, driver, output, timeout=120):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if os.path.exists(rendezvous):
                with open(rendezvous) as f:
                    address = f.read().strip()
                if address:
                    return address
            if driver.poll() is not None:
                time.sleep(0.2)  # let the follower read the last lines
                raise DistributorError("the deepdist driver did not start:\n" + "\n".join(output[-20:]))
            time.sleep(0.1)
        driver.kill()
        raise DistributorError(f"the deepdist driver wrote no address within {timeout} s")

    def _task(self, sc, address, relay, cores, size, secret):
        """The barrier stage's function: one executor rank per task."""
        binary, ship = self.binary, self.ship
        name = os.path.basename(binary)
        # Executors only check the driver's certificate (the CA file at the
        # same path on every node).
        tls_args = ["--tls-ca", self.tls["ca"]] if self.tls else []
        if ship:
            sc.addFile(binary)
        # The tasks' functions travel by value: the nodes' Pythons need
        # pyspark only, not this package.
        from pyspark import cloudpickle

        cloudpickle.register_pickle_by_value(sys.modules[__package__])

        def run_executor(_):
            from pyspark import BarrierTaskContext, SparkFiles

            ctx = BarrierTaskContext.get()
            rank = ctx.partitionId() + 1
            path = SparkFiles.get(name) if ship else binary
            if ship:
                os.chmod(path, 0o755)
            env = dict(os.environ, DEEPDIST_RANK=str(rank), DEEPDIST_SIZE=str(size), DEEPDIST_CORES=str(cores))
            args = ["launch", "-", "--driver", address, "--secret-file", "-", *tls_args]
            code, tail = _run_rank(path, args, env, secret, f"[deepdist executor {rank}] ", relay)
            # A job that failed ends every rank non-zero; the driver reports
            # it, and retrying the stage would not help.
            over = any("the run is over" in line for line in tail)
            if code != 0 and not over:
                raise RuntimeError(f"deepdist executor rank {rank} exited {code}:\n" + "\n".join(tail))
            yield rank

        return run_executor

    @staticmethod
    def _summary(runs, started, submitted):
        dirs = [d for d in glob.glob(os.path.join(runs, "*", "")) if os.path.exists(os.path.join(d, "metrics.jsonl"))]
        if not dirs:
            raise DistributorError(f"the job finished but wrote no metrics under {runs}")
        out = max(dirs, key=os.path.getmtime)
        with open(os.path.join(out, "metrics.jsonl")) as f:
            metrics = [json.loads(l) for l in f if l.strip()]
        supervised = [m for m in metrics if m.get("test_accuracy") is not None]
        first = (submitted[0] - started if submitted else 0.0) + (metrics[0]["elapsed_s"] if metrics else 0.0)
        return Summary(
            final_accuracy=supervised[-1]["test_accuracy"] if supervised else float("nan"),
            epochs=len(metrics),
            model=os.path.join(out, "model.safetensors"),
            output_dir=out,
            first_epoch_s=first,
            metrics=metrics,
        )


class _Stage:
    """The barrier stage, run on a thread of its own while the driver runs."""

    def __init__(self, sc, group, task, tasks):
        self.sc, self.group, self.task, self.tasks = sc, group, task, tasks
        self.error = None
        self.thread = threading.Thread(target=self._collect, daemon=True)

    def _collect(self):
        try:
            self.sc.setJobGroup(self.group, "deepdist executors", interruptOnCancel=True)
            # The shuffle makes the barrier stage a map stage, which Spark
            # retries whole when a task fails (a failed barrier result stage
            # is aborted instead).
            rdd = self.sc.parallelize(range(self.tasks), self.tasks).barrier().mapPartitions(self.task)
            rdd.repartition(1).collect()
        except Exception as e:  # the driver's outcome decides what run() says
            self.error = e

    def start(self):
        self.thread.start()

    def failed(self):
        """True once the stage has ended with an error."""
        return not self.thread.is_alive() and self.error is not None

    def finish(self, timeout):
        """Waits for the executors to leave; cancels the stage if they stay."""
        self.thread.join(timeout=timeout)
        if self.thread.is_alive():
            self.sc.cancelJobGroup(self.group)
            self.thread.join(timeout=30)
