"""The one mapping of loading / I-O failures to one-line errors: what it maps, and what it leaves alone."""

from __future__ import annotations

import errno
import json

import pytest
import torch
from safetensors.torch import save_file

from mmalign.errors import FileError
from mmalign.utils.io_errors import environment_error, reading


def test_a_bad_file_inside_a_folder_is_named(tmp_path):
    save_file({"a": torch.zeros(4)}, str(tmp_path / "a.safetensors"))
    save_file({"b": torch.zeros(64)}, str(tmp_path / "b.safetensors"))
    data = (tmp_path / "b.safetensors").read_bytes()
    (tmp_path / "b.safetensors").write_bytes(data[:-100])
    from safetensors import safe_open

    with pytest.raises(FileError) as exc, reading(tmp_path, "model.path", what="model"):
        for f in sorted(tmp_path.glob("*.safetensors")):
            with safe_open(str(f), framework="pt"):
                pass
    assert exc.value.path == str(tmp_path / "b.safetensors") and exc.value.key == "model.path"
    assert str(exc.value).startswith(f"model.path: {tmp_path / 'b.safetensors'}: cannot load the model: corrupt")


def test_json_and_recursion_errors_name_the_file(tmp_path):
    (tmp_path / "ok.json").write_text("{}")
    (tmp_path / "zz.json").write_text('{"a": [1, 2')
    with pytest.raises(FileError, match=r"zz\.json: invalid JSON \(line 1 column 12"):
        with reading(tmp_path):
            json.loads((tmp_path / "zz.json").read_text())
    with pytest.raises(FileError, match="nested too deeply"):
        with reading(tmp_path / "deep.json"):
            json.loads("[" * 100_000 + "]" * 100_000)


def test_an_unknown_exception_is_a_bug_and_keeps_its_type_unless_broad(tmp_path):
    with pytest.raises(ZeroDivisionError), reading(tmp_path):
        _ = 1 / 0
    with pytest.raises(FileError, match="cannot load the tokenizer: KeyError: 'added_tokens'") as exc:
        with reading(tmp_path, what="tokenizer", broad=True):
            raise KeyError("added_tokens")
    assert isinstance(exc.value.__cause__, KeyError)  # --debug still shows where it came from


def test_environment_errors_are_only_those_the_machine_causes(tmp_path):
    denied = environment_error(PermissionError(errno.EACCES, "Permission denied", str(tmp_path / "x")))
    assert denied is not None and str(denied) == f"{tmp_path / 'x'}: Permission denied"
    full = environment_error(OSError(errno.ENOSPC, "No space left on device", str(tmp_path / "y")))
    assert full is not None and "No space left" in str(full)
    assert environment_error(FileNotFoundError(errno.ENOENT, "No such file", "z")) is None
    assert environment_error(ValueError("x")) is None
