"""The ``run:`` section every recipe config has: name, output root, seed, device and dtype."""

from __future__ import annotations

from dataclasses import dataclass, field

from mmalign.errors import ConfigError
from mmalign.utils.rundir import run_name_problem

DEVICES = ("auto", "cpu", "cuda", "mps")
DTYPES = ("auto", "float32", "bfloat16", "float16")


@dataclass
class RunConfig:
    """Where a run writes (``output_dir/name``, ``name`` one path component) and how it is seeded and placed."""

    name: str = field(default="run", metadata={"nonempty": True})
    output_dir: str = "runs"
    seed: int = field(default=0, metadata={"ge": 0})
    device: str = field(default="auto", metadata={"choices": DEVICES})
    dtype: str = field(default="auto", metadata={"choices": DTYPES})

    def validate(self) -> None:
        problem = run_name_problem(self.name)
        if problem is not None:  # a run name is one directory inside output_dir, never a path
            raise ConfigError(key="name", problem=f"{problem}")


@dataclass
class RunOnlyConfig:
    """A config with only a run section (useful for checking the config machinery)."""

    recipe: str = "run"
    run: RunConfig = field(default_factory=RunConfig)
