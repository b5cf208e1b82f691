"""launch/slurm/pipeline.sh on a real SLURM cluster with the tiny model: a data array of 2 shards
-> one merge job -> train -> eval, chained with afterok, equal to `calibtune run` with the same
config. The train job has a 1-minute time limit and a signal lead, and SIGUSR1 reaches it
mid-run (from SLURM's timer or, since that timer is erratic, from the test): it checkpoints, is
requeued and resumes. A second training job is preempted (SIGTERM)
by a job of the higher-priority partition, and resumes the same way. Both end with the adapter
of the uninterrupted run, bit for bit."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
from slurm_helpers import REPO, Cluster, tiny_stage_overrides

pytestmark = pytest.mark.slurm

PIPELINE = REPO / "launch" / "slurm" / "pipeline.sh"
STEPS = 1600
# Long enough (about 36 s at 0.022 s a step on an idle core, 96 s at 0.06 s under load) that the
# stop signal lands mid-run: max_steps must bind, not epochs (the tiny set is 6 steps an epoch:
# 100 epochs stopped at step 600). No periodic checkpoints, so a resume can only start from the
# checkpoint written on the stop request.
TRAIN = [
    "train.epochs=1000",
    f"train.max_steps={STEPS}",
    "train.eval_every=400",
    "train.log_every=10",
    "train.checkpoint_every=0",
]
# SIGUSR1 55 s before a 1-minute limit, as a user would ask for it. SLURM's controller sends it on
# a periodic timer, and on this one-node cluster that timer is erratic: measured 5 to 40 s after
# the start on most runs, but on 2026-11-24 twice not at all (a 1,600-step run ended unsignalled
# after 46 s; a 3,200-step run was killed by the limit at 62 s with no SIGUSR1 before it). So the
# fixture also sends the batch shell the same signal (`scancel --batch --signal=USR1`, what
# --signal=B:USR1 delivers) once training is under way: the test is about what the job does with
# the signal (checkpoint, requeue, resume), not about when SLURM's timer fires.
TIME_LIMIT = "--time=1 --signal=B:USR1@55"
ADAPTER = Path("train/adapter/adapter_model.safetensors")


@dataclass(frozen=True)
class PipelineRun:
    """A finished pipeline, and the `calibtune run` reference with the same overrides."""

    run_dir: Path
    reference: Path
    jobs: dict[str, str]
    overrides: list[str]


def read_jobs(run_dir: Path) -> dict[str, str]:
    """stage -> job id, as pipeline.sh recorded them."""
    lines = (run_dir / "pipeline.jobs").read_text().splitlines()
    return dict(line.split() for line in lines)


def log_text(run_dir: Path, pattern: str) -> str:
    """The job logs under <run dir>/logs matching `pattern`, concatenated."""
    return "".join(p.read_text() for p in sorted((run_dir / "logs").glob(pattern)))


@pytest.fixture(scope="module")
def pipeline(slurm: Cluster, tiny_model_dir: Path, tmp_path_factory) -> PipelineRun:
    root = tmp_path_factory.mktemp("pipeline")
    overrides = [*tiny_stage_overrides(tiny_model_dir), *TRAIN]
    with (root / "reference.log").open("w") as log:
        # the reference runs beside the cluster's jobs, on one thread like them
        reference = subprocess.Popen(
            [sys.executable, "-m", "calibtune.cli", "run", f"run_dir={root / 'reference'}"]
            + overrides,
            cwd=REPO,
            env={**slurm.env, "OMP_NUM_THREADS": "1"},
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    run_dir = root / "slurm"
    submit_env = {
        "RUN_DIR": str(run_dir),
        "SHARDS": "2",
        "NODES": "1",
        "GPUS_PER_NODE": "0",
        "CPUS_PER_TASK": "1",
        "EXPORT": "0",
        "TRAIN_SBATCH_ARGS": TIME_LIMIT,
    }
    slurm.run(PIPELINE, *overrides, env=submit_env)
    jobs = read_jobs(run_dir)
    lifted: list[str] = []
    signalled: list[str] = []

    def signal_then_lift_time_limit(records: dict) -> None:
        train = records[jobs["train"]]
        restarts = int(train[0].get("Restarts", "0")) if train else 0
        metrics = run_dir / "train" / "metrics.jsonl"
        under_way = metrics.is_file() and "train/loss" in metrics.read_text()
        running = bool(train) and train[0]["JobState"] == "RUNNING"
        if not signalled and restarts == 0 and under_way and running:
            slurm.run("scancel", "--batch", "--signal=USR1", jobs["train"])
            signalled.append(jobs["train"])
        # Every run of the job would be signalled anew by the limit; once the requeue is seen,
        # a longer limit lets the resumed run finish (bounded test time).
        if not lifted and restarts >= 1:
            slurm.run("scontrol", "update", f"JobId={jobs['train']}", "TimeLimit=10")
            lifted.append(jobs["train"])

    slurm.wait(list(jobs.values()), on_poll=signal_then_lift_time_limit)
    assert reference.wait(timeout=600) == 0, (root / "reference.log").read_text()[-3000:]
    return PipelineRun(run_dir, root / "reference", jobs, overrides)


def test_every_stage_ran_as_a_job_and_the_merge_ran_once(slurm: Cluster, pipeline: PipelineRun):
    assert list(pipeline.jobs) == ["data", "merge", "train", "eval"]
    assert slurm.states(pipeline.jobs["data"]) == ["COMPLETED", "COMPLETED"]  # 2 array tasks
    for stage in ("merge", "train", "eval"):
        assert slurm.states(pipeline.jobs[stage]) == ["COMPLETED"], stage
    shards = log_text(pipeline.run_dir, "calibtune-data-*.out")
    assert shards.count("data.merge=false leaves the merge to a later run") == 2
    assert "labeled set:" not in shards
    assert log_text(pipeline.run_dir, "calibtune-merge-*.out").count("labeled set:") == 1
    assert not (pipeline.run_dir / "data" / ".partial").exists()
    # every job ran on the one CPU it asked for: srun got it, torch uses one thread
    for name in ("calibtune-data-*.out", "calibtune-train-*.out", "calibtune-eval-*.out"):
        assert re.search(r"\b1 threads\b", log_text(pipeline.run_dir, name)), name


def test_outputs_equal_those_of_calibtune_run(pipeline: PipelineRun):
    slurm_run, reference = pipeline.run_dir, pipeline.reference
    for split in ("train", "val", "test"):
        assert (slurm_run / f"data/{split}.jsonl").read_bytes() == (
            reference / f"data/{split}.jsonl"
        ).read_bytes(), split
    assert (slurm_run / ADAPTER).read_bytes() == (reference / ADAPTER).read_bytes()
    best = [
        json.loads((d / "train/manifest.json").read_text())["best"] for d in pipeline_dirs(pipeline)
    ]
    assert best[0] == best[1]
    metrics = [
        json.loads((d / "eval/metrics.json").read_text().replace(str(d), "<run dir>"))
        for d in pipeline_dirs(pipeline)
    ]
    for entry in metrics:  # the commit each process read at its start: moves if HEAD does
        entry.pop("git_commit")
    assert metrics[0] == metrics[1]


def pipeline_dirs(pipeline: PipelineRun) -> tuple[Path, Path]:
    return pipeline.run_dir, pipeline.reference


def stop_and_resume_steps(log: str) -> tuple[int, int]:
    """The step the trainer checkpointed at on a stop request, and the step it resumed from."""
    stopped = re.findall(r"checkpoint of step (\d+) written; exiting with 75", log)
    resumed = re.findall(r"resuming from \S+ \(step (\d+)\)", log)
    assert stopped and resumed, log[-3000:]
    return int(stopped[0]), int(resumed[0])


def test_train_signalled_before_its_time_limit_checkpoints_requeues_and_resumes(
    slurm: Cluster, pipeline: PipelineRun
):
    (train,) = slurm.jobs(pipeline.jobs["train"])
    log = log_text(pipeline.run_dir, "calibtune-train-*.out")
    assert int(train["Restarts"]) >= 1, log[-3000:]
    assert "received SIGUSR1" in log
    assert "stop requested (SIGUSR1)" in log
    assert re.search(r"stage train stopped \(SIGUSR1, step exit \d+\); requeueing job", log)
    assert "(restart 1)" in log
    stopped, resumed = stop_and_resume_steps(log)
    assert 0 < stopped == resumed < STEPS
    # and the requeued run finished with the uninterrupted run's adapter (bit for bit)
    assert (pipeline.run_dir / ADAPTER).read_bytes() == (pipeline.reference / ADAPTER).read_bytes()
    records = (pipeline.run_dir / "train" / "metrics.jsonl").read_text().splitlines()
    assert max(json.loads(line)["step"] for line in records) == STEPS  # max_steps, not epochs


def test_submitting_a_finished_pipeline_again_submits_nothing(
    slurm: Cluster, pipeline: PipelineRun
):
    jobs_before = (pipeline.run_dir / "pipeline.jobs").read_text()
    again = slurm.run(
        PIPELINE,
        *pipeline.overrides,
        env={"RUN_DIR": str(pipeline.run_dir), "SHARDS": "2", "GPUS_PER_NODE": "0", "EXPORT": "0"},
    )
    assert "every stage is done; nothing submitted" in again.stdout
    assert "sbatch" not in again.stdout
    assert (pipeline.run_dir / "pipeline.jobs").read_text() == jobs_before
    assert slurm.run("squeue", "-h").stdout.strip() == ""


def test_preempted_training_checkpoints_requeues_and_resumes(
    slurm: Cluster, pipeline: PipelineRun, tmp_path: Path
):
    run_dir = tmp_path / "preempted"
    (run_dir / "logs").mkdir(parents=True)
    train = slurm.sbatch(
        "--partition=batch",
        "--nodes=1",
        "--gpus-per-node=0",
        "--cpus-per-task=1",
        f"--output={run_dir}/logs/%x-%j.out",
        REPO / "launch/slurm/train.sbatch",
        *pipeline.overrides,
        f"train.data_dir={pipeline.run_dir / 'data'}",
        env={"RUN_DIR": str(run_dir)},
    )
    cpus = slurm.run("sinfo", "-h", "-o", "%c").stdout.split()[0]
    urgent: list[str] = []

    def preempt_once_training_is_under_way(records: dict) -> None:
        metrics = run_dir / "train" / "metrics.jsonl"
        if not urgent and metrics.is_file() and "train/loss" in metrics.read_text():
            # a job of the higher-priority partition that needs every CPU preempts the trainer
            urgent.append(
                slurm.sbatch(
                    "--partition=urgent",
                    f"--cpus-per-task={cpus}",
                    f"--output={run_dir}/logs/urgent-%j.out",
                    "--wrap=true",
                )
            )

    slurm.wait([train], on_poll=preempt_once_training_is_under_way)
    slurm.wait(urgent)
    assert slurm.states(urgent[0]) == ["COMPLETED"]
    (record,) = slurm.jobs(train)
    assert record["JobState"] == "COMPLETED" and int(record["Restarts"]) >= 1
    log = log_text(run_dir, "calibtune-train-*.out")
    assert "stop requested (SIGTERM)" in log
    assert re.search(r"stage train stopped \(preemption, step exit \d+\); requeueing job", log)
    stopped, resumed = stop_and_resume_steps(log)
    assert 0 < stopped == resumed < STEPS
    assert (run_dir / ADAPTER).read_bytes() == (pipeline.reference / ADAPTER).read_bytes()


def test_a_failing_stage_stops_the_chain_with_a_clear_message(
    slurm: Cluster, tiny_model_dir: Path, tmp_path: Path
):
    questions = tmp_path / "questions.jsonl"
    questions.write_text('{"question": "What is 2 plus 2?", "answers": ["4"]}\n{"answers": []}\n')
    run_dir = tmp_path / "failing"
    env = {
        "RUN_DIR": str(run_dir),
        "SHARDS": "1",
        "NODES": "1",
        "GPUS_PER_NODE": "0",
        "CPUS_PER_TASK": "1",
    }
    overrides = [
        *tiny_stage_overrides(tiny_model_dir),
        "dataset=jsonl",
        f"dataset.path={questions}",
    ]
    slurm.run(PIPELINE, *overrides, env=env)
    jobs = read_jobs(run_dir)
    slurm.wait(list(jobs.values()))
    assert slurm.states(jobs["data"]) == ["FAILED"]
    for stage in ("merge", "train", "eval"):  # never started: cancelled, dependency never met
        (record,) = slurm.jobs(jobs[stage])
        assert (record["JobState"], record["Reason"]) == ("CANCELLED", "DependencyNeverSatisfied")
    failed = (run_dir / "FAILED").read_text()
    assert f"stage data failed: job {jobs['data']}_0 " in failed
    assert "exited with status 2" in failed and "logs/calibtune-data-" in failed
    assert f"{questions}:2" in log_text(run_dir, "calibtune-data-*.out")  # the file:line at fault
    assert not (run_dir / "train").exists()
