"""Shipping a tuned checkpoint: `calibtune export` (merged model + calibrator + model card) and
`calibtune score` / `calibtune.Scorer` (calibrated confidences for question-answer pairs)."""
