"""Rewards: the :class:`Reward` protocol and its kinds (HF classifiers, python callables, rules,
CLIP score, ensembles, the bundled task's gold reward), built from config by :func:`build_reward`;
and the Bradley-Terry reward-model components ``mmalign reward`` trains with
(:mod:`mmalign.rewards.bradley_terry`)."""

from mmalign.rewards.base import CallableReward, Reward, as_reward
from mmalign.rewards.factory import build_reward, reward_config

__all__ = ["CallableReward", "Reward", "as_reward", "build_reward", "reward_config"]
