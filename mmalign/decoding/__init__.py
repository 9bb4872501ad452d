"""Decoding procedures over any Policy: best-of-N, worst-of-N and reward-guided blockwise decoding.
(Ancestral sampling with temperature / top-p / top-k lives in the policy's sampler.)"""

from mmalign.decoding.blockwise import blockwise_decode
from mmalign.decoding.bon import Choice, best_of_n, choose, score_responses, select, worst_of_n

__all__ = ["Choice", "best_of_n", "blockwise_decode", "choose", "score_responses", "select", "worst_of_n"]
