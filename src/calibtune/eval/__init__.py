"""The eval stage (docs/evaluation.md): confidences of base and tuned, post-hoc recalibrators,
metrics with paired-bootstrap deltas, Full-ECE, and the report. Entry: `stage.run_eval_stage`."""
