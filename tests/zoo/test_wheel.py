"""The tiers ship in the wheel: a wheel built from this checkout, installed (``--no-deps``) into a
fresh venv outside the checkout, lists every tier and builds, loads, samples and scores each one
at toy width, through the Python factory and the installed ``mmalign`` console script.

The fresh venv borrows the test venv's third-party packages through a ``.pth`` line (a plain path,
so the test venv's editable-install hook for mmalign is *not* run there); mmalign itself must come
from the wheel, which the script checks.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SPECS = ROOT / "mmalign" / "zoo" / "specs"

CHECK = r"""
import json, sys
from pathlib import Path

import numpy as np
import soundfile as sf
import torch
from PIL import Image

import mmalign
from mmalign import zoo
from mmalign.models.loading import load_policy
from mmalign.models.policy import Prompt

venv, work = Path(sys.argv[1]).resolve(), Path(sys.argv[2])
assert Path(mmalign.__file__).resolve().is_relative_to(venv), mmalign.__file__
assert zoo.SPECS.resolve().is_relative_to(venv), zoo.SPECS
Image.new("RGB", (32, 32), (220, 30, 30)).save(work / "red.png")
sf.write(work / "tone.wav", 0.3 * np.sin(2 * np.pi * 440 * np.arange(8000) / 16000), 16000)
rows = []
for tier in zoo.list_tiers():
    out = zoo.build_tier(tier, work / "ckpt" / tier.family / tier.name, vocab_size=300, width_scale=0.01,
                         num_layers=1)
    policy = load_policy(out, device="cpu", dtype="float32")
    if tier.family == "text":
        prompt = Prompt("hello")
    elif tier.family == "audio":
        prompt = Prompt("<audio> hi", [str(work / "tone.wav")])
    else:
        prompt = Prompt("<image> hi", [str(work / "red.png")])
    s = policy.sample([prompt], n=2, max_new_tokens=3, generator=torch.Generator().manual_seed(0))
    gap = float((policy.score(s) - s.logprobs).abs().max())
    rows.append({"tier": tier.full_name, "policy": type(policy).__name__, "gap": gap,
                 "params": sum(p.numel() for p in policy.model.parameters())})
print(json.dumps(rows))
"""


def _run(argv: list[str], **kwargs) -> str:
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=900, **kwargs)
    assert proc.returncode == 0, f"{' '.join(map(str, argv))} failed:\n{proc.stdout}\n{proc.stderr}"
    return proc.stdout


@pytest.mark.slow
def test_a_wheel_install_lists_and_builds_every_tier(tmp_path):
    # build from a copy of the sources so the checkout gets no build/ folder
    src = tmp_path / "src"
    shutil.copytree(ROOT / "mmalign", src / "mmalign", ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, src / name)
    _run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--no-index", "-q",
          "-w", str(tmp_path / "dist"), str(src)])
    (wheel,) = (tmp_path / "dist").glob("mmalign-*.whl")
    specs = sorted(f"{p.parent.name}/{p.stem}" for p in SPECS.glob("*/*.yaml"))
    assert len(specs) == 12
    with zipfile.ZipFile(wheel) as zf:
        shipped = sorted(n.removeprefix("mmalign/zoo/specs/").removesuffix(".yaml") for n in zf.namelist()
                         if n.startswith("mmalign/zoo/specs/"))
    assert shipped == specs

    venv = tmp_path / "venv"
    _run([sys.executable, "-m", "venv", "--without-pip", str(venv)])
    python = venv / "bin" / "python"
    purelib = Path(_run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"]).strip())
    (purelib / "zz_borrowed_site_packages.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    env = {k: v for k, v in os.environ.items() if k not in ("MMALIGN_ZOO", "VIRTUAL_ENV", "PYTHONHOME")}
    env["PYTHONPATH"] = str(ROOT / "tests" / "netguard")  # the no-network guard only, not the checkout
    # --ignore-installed: never touch the test venv's editable mmalign that pip can see through the .pth
    _run([str(python), "-m", "pip", "install", "--no-deps", "--no-index", "--ignore-installed", "-q", str(wheel)],
         cwd=tmp_path, env=env)

    work = tmp_path / "work"
    work.mkdir()
    rows = json.loads(_run([str(python), "-c", CHECK, str(venv), str(work)], cwd=work, env=env).splitlines()[-1])
    assert sorted(r["tier"] for r in rows) == specs
    for r in rows:
        assert r["policy"] == ("TextPolicy" if r["tier"].startswith("text/") else "MultimodalPolicy"), r
        assert r["gap"] < 1e-4 and 0 < r["params"] < 5_000_000, r

    listed = _run([str(venv / "bin" / "mmalign"), "zoo", "list"], cwd=work, env=env)
    assert sorted(line.split()[0] for line in listed.splitlines()[1:]) == specs
    shown = _run([str(venv / "bin" / "mmalign"), "zoo", "show", "vision/pro"], cwd=work, env=env)
    assert "laion2b_s34b_b79k" in shown
