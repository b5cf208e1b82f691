"""The eval stage (DESIGN.md §2, §3): confidences of base and tuned, post-hoc recalibrators,
metrics with paired-bootstrap deltas, Full-ECE, and the report. Entry: `stage.run_eval_stage`."""
