"""Build a labeled confidence set with the base model (the data stage).

python data/build_dataset.py                                  # 4,000 examples, built-in suite
python data/build_dataset.py data.n_examples=600 data.val_size=100 data.test_size=100
python data/build_dataset.py dataset=jsonl dataset.path=my_questions.jsonl
python data/build_dataset.py data.shard=0 data.num_shards=4   # one part (e.g. a SLURM array task)
calibtune data [same overrides]                               # the same stage through the CLI
"""

from __future__ import annotations

import hydra
from omegaconf import DictConfig

from calibtune.cli import report_user_errors
from calibtune.config import conf_dir
from calibtune.data.stage import run_data_stage


@hydra.main(version_base="1.3", config_path=str(conf_dir()), config_name="data")
def main(cfg: DictConfig) -> None:
    """Hydra entry point: build the labeled set; a CalibtuneError exits 2 with one line."""
    report_user_errors("data/build_dataset.py", run_data_stage, cfg)


if __name__ == "__main__":
    main()
