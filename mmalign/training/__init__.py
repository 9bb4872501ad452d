"""The training kernel every recipe (align, sft, distill, reward) shares.

* :mod:`~mmalign.training.batches`: the data order, seeded epoch permutations (resumable);
* :mod:`~mmalign.training.schedule`: the learning-rate schedule (``transformers.get_scheduler``);
* :mod:`~mmalign.training.checkpoint`: the one checkpoint format (atomic, manifest + sha256) and resume;
* :mod:`~mmalign.training.divergence`: non-finite loss / gradient / weight checks.

Recipes import it; it imports components (``models``, ``rl``, ``utils``, ``errors``), never the
other way round.
"""
