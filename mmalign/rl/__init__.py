"""RL components for CTRL: KL estimators and controllers, advantage estimators, losses, value
models, the tabular bandit policy, the rollout/update step and checkpoints.

Nothing here imports a recipe or the CLI.
"""
