"""The training kernel every recipe (align, sft, distill, reward) shares.

* :mod:`~mmalign.training.batches`: the data order, seeded epoch permutations (resumable);
* :mod:`~mmalign.training.schedule`: the learning-rate schedule (``transformers.get_scheduler``);
* :mod:`~mmalign.training.checkpoint`: the one checkpoint format (atomic, manifest + sha256) and resume;
* :mod:`~mmalign.training.divergence`: non-finite loss / gradient / weight checks;
* :mod:`~mmalign.training.accelerate_setup`: the run's Accelerator (refuses an FSDP / DeepSpeed
  launch accelerate does not honour) and the device a process loads on;
* :mod:`~mmalign.training.metrics`: metrics averaged over processes, per-process weight checksums;
* :mod:`~mmalign.training.fsdp`: FSDP2 shards gathered into full tensors and back (for checkpoints).

Recipes import it; it imports components (``models``, ``rl``, ``utils``, ``errors``), never the
other way round.
"""
