"""User-facing errors.

Anything the user can fix (a config key, a data file, a path) raises :class:`UserError`. The CLI
prints its message as one line on stderr and exits with status 2, without a traceback.
"""

from __future__ import annotations


class UserError(Exception):
    """A mistake in the user's input; its message is shown as a single line."""

    exit_code = 2

    def __init__(self, message: str) -> None:
        super().__init__(" ".join(str(message).split()))


class ConfigError(UserError):
    """An invalid configuration value, key or file. With ``key`` (a dotted config key, relative to
    the section that raised it) and ``problem``, the message reads ``key: problem`` and the loader
    can place the key in its file without reading the message back."""

    def __init__(self, message: str = "", *, key: str | None = None, problem: str | None = None) -> None:
        self.key, self.problem = key, problem if problem is not None else message
        super().__init__(f"{key}: {self.problem}" if key is not None else message)


class DataError(UserError):
    """A malformed or unusable data file."""


class PromptError(UserError):
    """Prompt ``index`` of a batch cannot be encoded; ``problem`` says why (the message reads
    ``prompt <index> <problem>``), so a caller can name the prompt's source instead."""

    def __init__(self, index: int, problem: str) -> None:
        self.index, self.problem = index, problem
        super().__init__(f"prompt {index} {problem}")


class RunLockedError(UserError):
    """Another live process holds the lock of the run directory ``path``."""

    def __init__(self, path: str, pid: int | None) -> None:
        self.path, self.pid = path, pid
        holder = f"pid {pid}" if pid is not None else "another process (pid unknown)"
        super().__init__(f"{path}: {holder} is writing this run; wait for it to finish or pick another run.name")


class DivergenceError(UserError):
    """Training produced a non-finite ``quantity`` (loss, gradient norm, weights) at ``step``;
    ``value`` is None where only its non-finiteness is known."""

    def __init__(self, recipe: str, step: int, quantity: str, value: float | None, hint: str) -> None:
        self.recipe, self.step, self.quantity, self.value = recipe, step, quantity, value
        shown = f"is {value}" if value is not None else "is not finite"
        super().__init__(f"{recipe}: training diverged at step {step}: {quantity} {shown}; {hint}")


class FileError(UserError):
    """A file or folder a run reads or writes is unusable: ``path`` names it, ``key`` the config key
    (or flag) that pointed at it, ``problem`` what is wrong with it."""

    def __init__(self, path: str, problem: str, key: str | None = None) -> None:
        self.path, self.problem, self.key = str(path), problem, key
        super().__init__(f"{key + ': ' if key else ''}{path}: {problem}")


class RewardError(DataError):
    """A reward raised or returned an unusable score. ``reward`` names it; ``index`` is the row of
    the batch it failed on (None when only the whole batch is known to have failed)."""

    def __init__(self, reward: str, problem: str, index: int | None = None) -> None:
        self.reward, self.problem, self.index = reward, problem, index
        row = f" for prompt index {index}" if index is not None else ""
        super().__init__(f"{reward} {problem}{row}")
