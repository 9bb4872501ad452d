"""RL components for CTRL: KL estimators and controllers, advantage estimators, losses, value
models, the tabular bandit policy, the rollout/update step and the calibration store
(:mod:`mmalign.rl.calibration_store`: reference rewards on disk, reused across runs).

Nothing here imports a recipe or the CLI.
"""
