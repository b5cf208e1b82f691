"""The train stage: LoRA (or probe) calibration-tuning on a labeled set (docs/training.md).

`calibtune.train.recipe.run_train_stage(cfg)` is the entry point used by `calibtune train` and
`train/calibrate.py`."""
