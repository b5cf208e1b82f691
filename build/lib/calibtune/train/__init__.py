"""The train stage: LoRA (or probe) calibration-tuning on a labeled set (DESIGN.md §1 step 4).

`calibtune.train.recipe.run_train_stage(cfg)` is the entry point used by `calibtune train` and
`train/calibrate.py`."""
