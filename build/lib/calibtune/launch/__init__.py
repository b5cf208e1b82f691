"""Running calibtune at scale: SLURM command building and dry runs (`calibtune.launch.slurm`),
sweep objectives (`calibtune.launch.sweep`) and the sweep leaderboard (`calibtune leaderboard`)."""
