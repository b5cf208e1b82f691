"""Dry runs of the SLURM scripts in launch/slurm/: the exact commands they would run.

    python -m calibtune.launch.slurm train --nodes 2 --gpus-per-node 8 [hydra overrides]
    python -m calibtune.launch.slurm data --array-task 3 --array-count 8 [hydra overrides]
    python -m calibtune.launch.slurm eval [hydra overrides]

The real script runs under bash with the environment SLURM would give it, and with stand-ins for
`scontrol` (the allocation's host names), `srun` (prints its command line, then runs the task
command once per node with that node's SLURM_NODEID/SLURM_PROCID, as srun does) and the
programs a task starts (`accelerate`, `calibtune`, `python`: print their command lines). What is
printed is therefore what the script itself computes, per node, not a second copy of its logic.
"""

from __future__ import annotations

import argparse
import os
import shlex
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from calibtune.errors import ConfigError

SCRIPTS = ("train", "data", "eval")
PRINTED_PROGRAMS = ("accelerate", "calibtune", "python")

SCONTROL = """#!{python}
import os, sys
if sys.argv[1:3] != ["show", "hostnames"]:
    sys.exit("dry-run scontrol: only `scontrol show hostnames` is supported")
host = os.environ["CALIBTUNE_DRY_RUN_HOST"]
sys.stdout.write("".join(f"{{host}}{{i:03d}}\\n" for i in range(int(os.environ["SLURM_NNODES"]))))
"""

SRUN = """#!{python}
import os, shlex, subprocess, sys
args = sys.argv[1:]
# one line per srun: backslash-newline continuations inside `bash -c '...'` become spaces
line_break = chr(92) + chr(10)  # backslash-newline
print("srun " + shlex.join(" ".join(p.strip() for p in a.split(line_break)) for a in args), flush=True)
options = 0
while options < len(args) and args[options].startswith("-"):
    options += 1
nodes = int(os.environ["SLURM_NNODES"])
for option in args[:options]:
    if option.startswith(("--nodes=", "-N")):
        nodes = int(option.split("=")[-1].lstrip("-N"))
for node in range(nodes):
    env = dict(os.environ, SLURM_NODEID=str(node), SLURM_PROCID=str(node), SLURM_LOCALID="0",
               SLURMD_NODENAME=f"{{os.environ['CALIBTUNE_DRY_RUN_HOST']}}{{node:03d}}",
               CALIBTUNE_DRY_RUN_NODE=str(node))
    code = subprocess.run(args[options:], env=env).returncode
    if code:
        sys.exit(code)
"""

PRINTER = """#!{python}
import os, shlex, sys
node = os.environ.get("CALIBTUNE_DRY_RUN_NODE", "-")
print(f"[node {{node}}] " + shlex.join(["{name}", *sys.argv[1:]]), flush=True)
"""


@dataclass(frozen=True)
class DryRun:
    """What a dry run of one script printed: `srun ...` lines and `[node i] <command>` lines."""

    script: Path
    lines: list[str]

    def srun_commands(self) -> list[list[str]]:
        """The argv of every srun the script ran."""
        return [shlex.split(line)[1:] for line in self.lines if line.startswith("srun ")]

    def node_commands(self) -> dict[int, list[list[str]]]:
        """Per node, the argv of every program its task started."""
        commands: dict[int, list[list[str]]] = {}
        for line in self.lines:
            if line.startswith("[node "):
                node, _, command = line[len("[node ") :].partition("] ")
                commands.setdefault(int(node), []).append(shlex.split(command))
        return commands


def slurm_dir() -> Path:
    """launch/slurm/ of the calibtune checkout."""
    path = Path(__file__).resolve().parents[3] / "launch" / "slurm"
    if not path.is_dir():
        raise ConfigError(f"{path} not found: the SLURM scripts ship with the calibtune checkout")
    return path


def write_stand_ins(bin_dir: Path) -> None:
    """Write the scontrol/srun/program stand-ins into `bin_dir`."""
    python = sys.executable
    stand_ins = {"scontrol": SCONTROL.format(python=python), "srun": SRUN.format(python=python)}
    for name in PRINTED_PROGRAMS:
        stand_ins[name] = PRINTER.format(python=python, name=name)
    for name, text in stand_ins.items():
        path = bin_dir / name
        path.write_text(text, encoding="utf-8")
        path.chmod(0o755)


def slurm_environment(
    nodes: int,
    gpus_per_node: int,
    cpus_per_task: int,
    job_id: int,
    array_task: int | None,
    array_count: int | None,
    host_prefix: str,
) -> dict[str, str]:
    """The variables SLURM sets in a batch script for this allocation."""
    env = {
        "SLURM_JOB_ID": str(job_id),
        "SLURM_NNODES": str(nodes),
        "SLURM_JOB_NUM_NODES": str(nodes),
        "SLURM_JOB_NODELIST": f"{host_prefix}[000-{nodes - 1:03d}]",
        "SLURM_GPUS_ON_NODE": str(gpus_per_node),
        "SLURM_CPUS_PER_TASK": str(cpus_per_task),
        "SLURM_RESTART_COUNT": "0",
        "CALIBTUNE_DRY_RUN_HOST": host_prefix,
    }
    if array_task is not None:
        env |= {
            "SLURM_ARRAY_JOB_ID": str(job_id),
            "SLURM_ARRAY_TASK_ID": str(array_task),
            "SLURM_ARRAY_TASK_COUNT": str(array_count),
        }
    return env


def dry_run(
    script: str,
    overrides: Sequence[str] = (),
    nodes: int = 2,
    gpus_per_node: int = 8,
    cpus_per_task: int = 8,
    job_id: int = 4242,
    array_task: int | None = None,
    array_count: int | None = None,
    env: dict[str, str] | None = None,
    host_prefix: str = "gpu-node-",
) -> DryRun:
    """Run launch/slurm/<script>.sbatch with stand-ins and return what it would execute."""
    if script not in SCRIPTS:
        raise ConfigError(f"unknown SLURM script {script!r}; choose one of {', '.join(SCRIPTS)}")
    if (array_task is None) != (array_count is None):
        raise ConfigError("give both --array-task and --array-count, or neither")
    path = slurm_dir() / f"{script}.sbatch"
    with tempfile.TemporaryDirectory(prefix="calibtune-dry-run-") as tmp:
        bin_dir = Path(tmp) / "bin"
        bin_dir.mkdir()
        write_stand_ins(bin_dir)
        run_env = {
            **os.environ,
            **slurm_environment(
                nodes, gpus_per_node, cpus_per_task, job_id, array_task, array_count, host_prefix
            ),
            **(env or {}),
            "PATH": f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}",
            "CALIBTUNE_VENV": str(Path(tmp) / "no-venv"),  # keep the real programs off PATH
            "CALIBTUNE_ROOT": str(path.parents[2]),  # where the scripts find common.sh
        }
        result = subprocess.run(
            ["bash", str(path), *overrides],
            env=run_env,
            cwd=tmp,  # the script's mkdir of its run dir lands here, not in the checkout
            capture_output=True,
            text=True,
            timeout=60,
        )
    if result.returncode != 0:
        raise ConfigError(f"dry run of {path.name} failed:\n{result.stdout}{result.stderr}")
    lines = [line for line in result.stdout.splitlines() if line.strip()]
    return DryRun(script=path, lines=lines)


def main(argv: Sequence[str] | None = None) -> None:
    """Print the commands a SLURM script would run (python -m calibtune.launch.slurm --help)."""
    parser = argparse.ArgumentParser(
        prog="python -m calibtune.launch.slurm",
        description="Print the exact srun / accelerate launch commands of a launch/slurm script.",
    )
    parser.add_argument("script", choices=SCRIPTS)
    parser.add_argument("--nodes", type=int, default=2)
    parser.add_argument("--gpus-per-node", type=int, default=8)
    parser.add_argument("--cpus-per-task", type=int, default=8)
    parser.add_argument("--job-id", type=int, default=4242)
    parser.add_argument("--array-task", type=int)
    parser.add_argument("--array-count", type=int)
    args, overrides = parser.parse_known_args(argv)
    try:
        run = dry_run(
            args.script,
            overrides,
            nodes=args.nodes,
            gpus_per_node=args.gpus_per_node,
            cpus_per_task=args.cpus_per_task,
            job_id=args.job_id,
            array_task=args.array_task,
            array_count=args.array_count,
        )
    except ConfigError as err:
        print(f"error: {err}", file=sys.stderr)
        sys.exit(2)
    print("\n".join(run.lines))


if __name__ == "__main__":
    main()
