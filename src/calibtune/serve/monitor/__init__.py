"""`calibtune monitor`: calibration of scored traffic over time, drift alarms, safe refits.

One module per concern: `log` (reading the scored-traffic log), `drift` (the reference, the
drift tests and `Monitor`, per-window statistics), `refit` (refitting calibrators on recent
traffic), `versions` (promoting and rolling back calibrator versions), `page` (monitor.html)
and `command` (`run_monitor`, what `calibtune monitor` runs).
"""

from calibtune.serve.monitor.command import run_monitor
from calibtune.serve.monitor.drift import (
    CalibrationCusum,
    Monitor,
    reference_from_eval,
    reference_from_rows,
    window_stats,
)
from calibtune.serve.monitor.log import read_log
from calibtune.serve.monitor.refit import refit_calibrator
from calibtune.serve.monitor.versions import rollback

__all__ = [
    "CalibrationCusum",
    "Monitor",
    "read_log",
    "reference_from_eval",
    "reference_from_rows",
    "refit_calibrator",
    "rollback",
    "run_monitor",
    "window_stats",
]
