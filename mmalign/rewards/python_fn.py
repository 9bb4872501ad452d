"""``kind: python``: a reward function the user names in their own config.

``function: package.module:name`` imports a module; ``function: path/to/file.py:name`` loads a
file (relative paths are taken from the working directory). The function is called as
``fn(prompts, responses)`` (or ``fn(prompts, responses, media)`` if it takes three arguments) and
returns one number per response. Only a config the user wrote can name one; data files never do.
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from mmalign.errors import ConfigError
from mmalign.rewards.base import CallableReward


def load_function(spec: str, where: str = "function") -> Callable[..., Any]:
    """Import ``module:name`` or ``file.py:name`` and return the callable."""
    target, sep, name = spec.rpartition(":")
    if not sep or not target or not name or not name.replace(".", "_").isidentifier():
        raise ConfigError(f"{where}: expected 'package.module:function' or 'path/to/file.py:function', got '{spec}'")
    if target.endswith(".py"):
        path = Path(target).expanduser()
        if not path.is_file():
            raise ConfigError(f"{where}: file not found: {target}")
        mod_name = "mmalign_user_reward_" + hashlib.sha256(str(path.resolve()).encode()).hexdigest()[:12]
        module_spec = importlib.util.spec_from_file_location(mod_name, path)
        if module_spec is None or module_spec.loader is None:
            raise ConfigError(f"{where}: cannot load {target} as a Python file")
        module = importlib.util.module_from_spec(module_spec)
        sys.modules[mod_name] = module
        try:
            module_spec.loader.exec_module(module)
        except Exception as exc:
            sys.modules.pop(mod_name, None)
            raise ConfigError(f"{where}: importing {target} failed: {type(exc).__name__}: {exc}") from None
    else:
        try:
            module = importlib.import_module(target)
        except ImportError as exc:
            raise ConfigError(f"{where}: cannot import module '{target}' ({exc})") from None
    obj: Any = module
    for part in name.split("."):
        if not hasattr(obj, part):
            raise ConfigError(f"{where}: '{target}' has no attribute '{name}'")
        obj = getattr(obj, part)
    if not callable(obj):
        raise ConfigError(f"{where}: '{spec}' is not callable")
    return obj


def python_reward(spec: str, *, deterministic: bool = True, where: str = "function") -> CallableReward:
    """The callable named by ``spec`` as a Reward; its fingerprint covers the source file's bytes."""
    fn = load_function(spec, where)
    target = spec.rpartition(":")[0]
    source_file = Path(target) if target.endswith(".py") else Path(getattr(sys.modules.get(target), "__file__", "") or "")
    digest = hashlib.sha256(source_file.read_bytes()).hexdigest() if source_file.is_file() else ""
    return CallableReward(fn, deterministic=deterministic, name=spec, identity={"function": spec, "source": digest})
