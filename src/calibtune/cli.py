"""`calibtune <command> [hydra overrides]`: one entry point for every stage.

Stage commands (data, train, eval, run, lodo, export, score, monitor, adapt) run as Hydra apps over `conf/`, so
`--cfg job`, `-m` sweeps and every override work as they do for the entry scripts.
`calibtune leaderboard <sweep dir>` gathers a sweep's results.
"""

from __future__ import annotations

import atexit
import importlib
import logging
import sys

from calibtune.errors import CalibtuneError

# command -> (config name, "module:function" taking the composed DictConfig)
COMMANDS = {
    "data": ("data", "calibtune.data.stage:run_data_stage"),
    "train": ("train", "calibtune.train.recipe:run_train_stage"),
    "eval": ("eval", "calibtune.eval.stage:run_eval_stage"),
    "run": ("run", "calibtune.pipeline:run_pipeline"),
    "lodo": ("run", "calibtune.launch.lodo:run_lodo"),
    "export": ("eval", "calibtune.serve.export:run_export"),
    "score": ("eval", "calibtune.serve.score:run_score"),
    "monitor": ("monitor", "calibtune.serve.monitor:run_monitor"),
    "adapt": ("adapt", "calibtune.serve.adapt:run_adapt"),
}
OTHER_COMMANDS = {
    "leaderboard": "calibtune.launch.leaderboard:main",
    "results": "calibtune.launch.results:main",
}

USAGE = """usage: calibtune <command> [hydra overrides]

commands:
  data         answer and grade questions with the base model -> labeled confidence set
               (`calibtune data grade <set> --grader G` re-grades a set, prints agreement)
  train        LoRA calibration-tuning on a labeled set
  eval         calibration of base vs tuned, with intervals, baselines and a report
  run          data -> train -> eval
  lodo         leave-domains-out: `run` once per fold of held-out domains, then the fold mean
  export       merge the adapter into the base weights (+ calibrator, model card)
  score        calibrated confidences for (question, answer) pairs (+ answer/retrieve/escalate)
  monitor      calibration of scored traffic over time: drift alarms, refit, rollback
  adapt        fit the confidence's level map on labeled rows of your traffic (before/after)
  leaderboard  gather a sweep's trials into one table
  results      Markdown tables of run, seed or lodo dirs: base vs tuned vs baselines, mean ± sd

`calibtune <command> --cfg job` prints the resolved config; `-m` runs a sweep."""


def load_target(target: str):
    """Import `module:function`; a stage not built yet says so plainly."""
    module_name, func_name = target.split(":")
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as err:
        if err.name and module_name.startswith(err.name):
            raise CalibtuneError(f"{module_name} is not implemented yet") from None
        raise
    return getattr(module, func_name)


def report_user_errors(name: str, stage_fn, cfg):
    """Run `stage_fn(cfg)` (with reproducible CPU math, see calibtune.runtime); a CalibtuneError
    is printed as one line naming `name`, exit status 2."""
    from calibtune.runtime import leave_process_group, reproducible_cpu_math

    reproducible_cpu_math()
    atexit.register(leave_process_group)  # at exit, not here: a multirun's next trial may join
    try:
        return stage_fn(cfg)
    except CalibtuneError as err:
        print(f"{name}: error: {err}", file=sys.stderr)
        sys.exit(2)


def run_stage(command: str, argv: list[str]) -> None:
    """Run a stage command as a Hydra app with `argv` as its command line."""
    import hydra

    from calibtune.config import conf_dir
    from calibtune.runtime import commit_at_start

    commit_at_start()  # read before any work: outputs record the code this stage started with
    config_name, target = COMMANDS[command]

    def run_and_score(cfg):
        result = load_target(target)(cfg)
        if "sweep" in cfg:  # `+sweep=...`: the sweeper optimises the trial's objective
            return load_target("calibtune.launch.sweep:objective")(cfg)
        return result

    def stage_fn(cfg):
        return report_user_errors(f"calibtune {command}", run_and_score, cfg)

    app = hydra.main(version_base="1.3", config_path=str(conf_dir()), config_name=config_name)(
        stage_fn
    )
    sys.argv = [f"calibtune {command}", *argv]
    app()


def main(argv: list[str] | None = None) -> None:
    """Console entry point."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help", "help"):
        print(USAGE)
        return
    command, rest = argv[0], argv[1:]
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    try:
        if command == "data" and rest[:1] == ["grade"]:  # re-grade an existing labeled set
            load_target("calibtune.data.regrade:main")(rest[1:])
        elif command in COMMANDS:
            run_stage(command, rest)
        elif command in OTHER_COMMANDS:
            load_target(OTHER_COMMANDS[command])(rest)
        else:
            print(f"calibtune: unknown command {command!r}\n\n{USAGE}", file=sys.stderr)
            sys.exit(2)
    except CalibtuneError as err:
        print(f"calibtune {command}: error: {err}", file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    main()
