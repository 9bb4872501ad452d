"""Reproduce InfAlign (CTRL for best-of-N and worst-of-N) on the bundled text task, end to end, on CPU.

    python scripts/reproduce_infalign.py            # the full study: 5 methods x 3 KL budgets x 3 seeds
    python scripts/reproduce_infalign.py --quick    # a tiny smoke version (~3 min on 2 cores)
    python scripts/reproduce_infalign.py --jobs 2   # two runs at a time, one thread each (faster on 2 cores)

1. Reference: a toy-width Nano (`mmalign zoo init nano`, tokenizer trained on the bundled SFT
   text), supervised fine-tuned on the bundled task (`mmalign sft configs/reproduce/sft_nano.yaml`),
   built under the study's own --out directory with fixed seeds.
2. Alignment (`mmalign align`): every method includes configs/reproduce/align_base.yaml and runs at
   each KL budget (kl.target, adaptive controller) and each seed (run.seed):
     raw RLHF         the raw reward (raw.yaml)
     CTRL-identity    calibrated reward, no transform (ctrl_identity.yaml)
     CTRL-exp (bo4)   calibrated reward, exp(t·c), t from the calculus for best-of-4 (ctrl_exp.yaml)
     BOND/vBoN (bo4)  best-of-4 distillation, score (N-1)·log c (bond.yaml)
     CTRL-neg_exp     calibrated reward, -exp(-t·c), t from the calculus for worst-of-4 (ctrl_neg_exp.yaml)
   One calibration store for the whole study (<out>/runs/calibration.safetensors): every calibrated
   method and seed calibrates against the same reference samples.
3. Evaluation (`mmalign evaluate winrate`), every run twice: on the training prompts
   (winrate_train.yaml) and on held-out prompts (winrate_heldout.yaml); standard, best-of-4 and
   worst-of-4 win rates against the reference with bootstrap intervals, and the measured KL. The
   eval seed comes from the config and is the same for every method, so comparisons are paired.
4. Numbers: per run the captured fraction (W - 0.5) / (W_analytic(KL) - 0.5) of the method's own
   ideal tilt at the run's measured KL; means and spreads over seeds; paired per-prompt bootstrap
   comparisons between methods; verdicts on the paper's claims computed from those numbers.
5. Report: --doc (default docs/results/infalign_bundled.md; <out>/infalign_bundled.md with
   --quick) with generated tables, plots of win rate vs measured KL over the analytic curves in
   <doc dir>/<doc stem>/, and every number in <doc dir>/<doc stem>/results.json.

Every setting is read from the configs (the run snapshots, once they ran); --quick only shrinks
them with overrides. A finished run is reused when the script is rerun with the same --out and its
config snapshot equals what would run now (and it is newer than the reference); otherwise it is
rerun. --fresh starts over. A hand-written reading between the `<!-- reading:begin -->` and
`<!-- reading:end -->` markers of an existing doc is kept when the doc is regenerated.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import math
import os
import platform
import re
import shutil
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml
from demo import (  # scripts/demo.py: offline environment, in-process runner, tokenizer text
    corpus,
    mmalign,
)

if TYPE_CHECKING:
    from mmalign.align import Transform

REPO = Path(__file__).resolve().parents[1]
CONFIGS = Path("configs/reproduce")


@dataclass(frozen=True)
class Method:
    """One method of the study: its config in configs/reproduce/ and its label in tables and plots."""

    config: str
    label: str


METHODS = {
    "raw": Method("raw.yaml", "raw RLHF"),
    "ctrl-identity": Method("ctrl_identity.yaml", "CTRL-identity"),
    "ctrl-exp": Method("ctrl_exp.yaml", "CTRL-exp (bo4)"),
    "bond": Method("bond.yaml", "BOND/vBoN (bo4)"),
    "ctrl-neg-exp": Method("ctrl_neg_exp.yaml", "CTRL-neg_exp (wo4)"),
}
# prompt set key -> (evaluation config, name in the report)
EVAL_SETS = {"train": ("winrate_train.yaml", "training prompts"), "heldout": ("winrate_heldout.yaml", "held-out prompts")}
# paired comparisons: (method A, method B, procedure of the win rate compared)
COMPARISONS = (("ctrl-exp", "ctrl-identity", "bon"), ("ctrl-exp", "raw", "bon"),
               ("ctrl-neg-exp", "ctrl-identity", "won"), ("ctrl-identity", "raw", "standard"))
PROCEDURE_ORDER = ("standard", "bon", "won")
FULL_BUDGETS, FULL_SEEDS = (0.25, 0.5, 1.0), (0, 1, 2)
QUICK_BUDGETS, QUICK_SEEDS = (0.5,), (0,)
KL_MATCH = 0.10       # KLs are matched when |KL_A / KL_B - 1| <= 10%
CAPTURED_BAR = 0.90   # acceptance: captured fraction on training prompts
KL_FLOOR = 1e-3       # below this measured KL the analytic gain is too small for a captured fraction
# Step size per budget, the same for every method: align_base.yaml's train.lr is the rate at KL 1,
# scaled by sqrt(budget) (the distance a tilt moves in parameter space grows like sqrt(KL)). At a
# fixed rate the gradient noise of a low budget's run costs a larger share of its KL (docs/ctrl.md).
LR_REFERENCE_KL = 1.0

# Overrides of the --quick smoke run (the configs hold the full study's settings).
QUICK_SFT = ["train.steps=30", "train.eval_every=30", "train.log_every=10", "eval_data.max_rows=16"]
QUICK_ALIGN = ["train.steps=3", "data.max_rows=8", "calibration.num_samples=8", "calibration.batch_prompts=8",
               "rollout.prompts_per_step=4", "checkpoint.every=3"]
QUICK_EVAL = ["prompts.max_rows=8", "samples_per_prompt=4", "bootstrap_reps=200", "frontier.points=3"]

READING_BEGIN, READING_END = "<!-- reading:begin -->", "<!-- reading:end -->"


def _rel(path: Path) -> str:
    """A path as shown in commands: relative to the repository when inside it."""
    try:
        return str(path.resolve().relative_to(REPO))
    except ValueError:
        return str(path)


# ---------------------------------------------------------------------------------------------
# running: reuse only what matches the configs of now
# ---------------------------------------------------------------------------------------------
def expected_config(config: Path, recipe: str, overrides: list[str]) -> str:
    """The config snapshot a run of ``config`` with ``overrides`` would write (its config.yaml)."""
    from mmalign.config import load_config, schema_for, to_yaml

    return to_yaml(load_config(config, schema_for(recipe), overrides))


def is_current(run_dir: Path, config_yaml: str, newer_than: float = 0.0) -> bool:
    """True when ``run_dir`` finished (DONE), ran exactly ``config_yaml`` and finished after
    ``newer_than`` (when what it depends on finished: a rebuilt reference invalidates every run)."""
    done, snap = run_dir / "DONE", run_dir / "config.yaml"
    return (done.exists() and snap.exists() and snap.read_text(encoding="utf-8") == config_yaml
            and done.stat().st_mtime >= newer_than)


@dataclass
class Runner:
    """How this invocation runs ``mmalign``: ``jobs`` runs at a time (each in its own process, the
    cores split between them), and the runs and evaluations it found finished and did not redo."""

    jobs: int = 1
    reused: list[Path] = field(default_factory=list)

    def cli(self, *argv: str) -> None:
        """``mmalign *argv``: in this process for one job at a time, else in a subprocess whose torch
        gets its share of the cores (two 1-thread runs on 2 cores finish sooner than one after the other)."""
        if self.jobs == 1:
            mmalign(*argv)
            return
        threads = str(max(1, (os.cpu_count() or 1) // self.jobs))
        env = dict(os.environ, OMP_NUM_THREADS=threads, MKL_NUM_THREADS=threads)
        print(f"\n$ mmalign {' '.join(argv)}", flush=True)
        code = subprocess.run([sys.executable, "-m", "mmalign", *argv], env=env, check=False).returncode
        if code:
            raise SystemExit(code)

    def run_or_reuse(self, run_dir: Path, config: Path, recipe: str, overrides: list[str],
                     argv: list[str], newer_than: float = 0.0) -> None:
        """Run ``mmalign *argv *overrides`` unless ``run_dir`` already holds the same finished run."""
        if is_current(run_dir, expected_config(config, recipe, overrides), newer_than):
            print(f"reusing {_rel(run_dir)}")
            self.reused.append(run_dir)
            return
        if (run_dir / "DONE").exists():
            print(f"{_rel(run_dir)}: config or reference changed since it ran: rerunning")
        self.cli(*argv, str(config), *overrides, "--overwrite", "-q")


def build_reference(out: Path, quick: bool) -> Path:
    """The SFT'd toy Nano every method starts from and is compared against (reused when current).

    Rebuilding it deletes the study's calibration store, whose samples came from the old weights
    (the store is keyed by the reference's file digest, so it would be stale anyway)."""
    run_dir, init = out / "runs/sft-nano", out / "nano-init"
    overrides = [f"run.output_dir={out / 'runs'}", f"model.path={init}", *(QUICK_SFT if quick else [])]
    cfg = CONFIGS / "sft_nano.yaml"
    if is_current(run_dir, expected_config(cfg, "sft", overrides)) and (run_dir / "final/config.json").exists():
        print(f"reusing the study's SFT reference in {_rel(run_dir / 'final')}")
        return run_dir / "final"
    out.mkdir(parents=True, exist_ok=True)
    calibration_store(out).unlink(missing_ok=True)
    mmalign("zoo", "init", "nano", "--out", str(init), "--width-scale", "0.0625", "--layers", "2",
            "--vocab-size", "512", "--text", str(corpus(out)), "--seed", "0", "--overwrite", "-q")
    mmalign("sft", str(cfg), *overrides, "--overwrite", "-q")
    return run_dir / "final"


def calibration_store(out: Path) -> Path:
    """The one calibration store of the study (keyed by reference fingerprint + prompt)."""
    return out / "runs" / "calibration.safetensors"


def run_name(method: str, kl: float, seed: int) -> str:
    """One path component naming a (method, KL budget, seed) run."""
    return f"{method}-kl{kl:g}-s{seed}"


def budget_lr(kl: float) -> float:
    """The learning rate of a run at KL budget ``kl``: align_base.yaml's train.lr times sqrt(kl / 1)."""
    base = yaml.safe_load((REPO / CONFIGS / "align_base.yaml").read_text(encoding="utf-8"))["train"]["lr"]
    return float(base) * math.sqrt(kl / LR_REFERENCE_KL)


def align_one(runner: Runner, out: Path, reference: Path, method: str, kl: float, seed: int, quick: bool) -> Path:
    """Align one (method, budget, seed) from the reference; returns its run directory."""
    name = run_name(method, kl, seed)
    overrides = [f"run.name={name}", f"run.output_dir={out / 'runs'}", f"run.seed={seed}", f"model.path={reference}",
                 f"kl.target={kl}", f"train.lr={budget_lr(kl):.6g}", f"calibration.store={calibration_store(out)}",
                 *(QUICK_ALIGN if quick else [])]
    runner.run_or_reuse(out / "runs" / name, CONFIGS / METHODS[method].config, "align", overrides, ["align"],
                        newer_than=_done_time(reference.parent))
    return out / "runs" / name


def evaluate_one(runner: Runner, out: Path, reference: Path, run_dir: Path, method: str, prompt_set: str,
                 quick: bool) -> Path:
    """Evaluate one aligned run on one prompt set; returns the evaluation's run directory."""
    eval_dir = out / "eval" / prompt_set
    overrides = [f"run.name={run_dir.name}", f"run.output_dir={eval_dir}", f"policy.path={run_dir / 'final'}",
                 f"reference.path={reference}", f"label={METHODS[method].label}", *(QUICK_EVAL if quick else [])]
    runner.run_or_reuse(eval_dir / run_dir.name, CONFIGS / EVAL_SETS[prompt_set][0], "evaluate_winrate",
                        overrides, ["evaluate", "winrate"], newer_than=_done_time(run_dir))
    return eval_dir / run_dir.name


def _done_time(run_dir: Path) -> float:
    """When ``run_dir`` finished (mtime of its DONE marker)."""
    return (run_dir / "DONE").stat().st_mtime


def run_seconds(run_dir: Path) -> float:
    """Wall seconds of one finished run, from its run.log ("started" to "finished"), 0 if unknown."""
    log = run_dir / "run.log"
    if not log.exists():
        return 0.0
    stamps = [line[:23] for line in log.read_text().splitlines()
              if line[23:].startswith((" INFO started", " INFO finished"))]
    if len(stamps) < 2:
        return 0.0
    fmt = "%Y-%m-%d %H:%M:%S,%f"
    return (_dt.datetime.strptime(stamps[-1], fmt) - _dt.datetime.strptime(stamps[0], fmt)).total_seconds()


def check_eval_configs() -> None:
    """Both prompt sets must judge with the same reward, seed, procedures and sampling (one line if not)."""
    from mmalign.config import load_config, schema_for

    keys = ("run.seed", "selection_reward", "judge_reward", "procedures", "sampling")
    cfgs = {s: load_config(CONFIGS / f, schema_for("evaluate_winrate"), ["policy.path=unused"])
            for s, (f, _) in EVAL_SETS.items()}
    for key in keys:
        values = {s: _get(cfg, key) for s, cfg in cfgs.items()}
        if len({repr(v) for v in values.values()}) > 1:
            sys.exit(f"{CONFIGS}: {key} differs between " + " and ".join(f for f, _ in EVAL_SETS.values())
                     + ": the prompt sets must be judged alike")


def _get(obj: Any, dotted: str) -> Any:
    """``obj.a.b`` for ``"a.b"`` on dicts (run snapshots) and dataclasses (loaded configs)."""
    for part in dotted.split("."):
        obj = obj[part] if isinstance(obj, dict) else getattr(obj, part)
    return obj


# ---------------------------------------------------------------------------------------------
# numbers of one run
# ---------------------------------------------------------------------------------------------
def snapshot(run_dir: Path) -> dict:
    """The config a run actually ran with (its config.yaml)."""
    return yaml.safe_load((run_dir / "config.yaml").read_text(encoding="utf-8"))


def deployment(cfg: dict) -> tuple[str, int]:
    """The procedure a method is deployed with: standard for raw / identity, else transform.procedure/n."""
    tr = cfg["transform"]
    if cfg["objective"] != "bond" and tr["name"] in ("raw", "identity"):
        return "standard", 1
    return tr["procedure"], int(tr["n"])


def ideal_tilt(cfg: dict) -> Transform:
    """The transform whose exact tilt of the reference is the method's ideal (at any KL).

    raw -> identity (the best standard RLHF can reach), bond -> log (BOND's score (N-1)·log c is
    the log tilt), auto -> exp / neg_exp at the t the run used (robust_t at its KL target), any
    other name -> that transform."""
    from mmalign.align import get_transform, robust_t

    tr = cfg["transform"]
    if cfg["objective"] == "bond":
        return get_transform("log")
    if tr["name"] in ("raw", "identity"):
        return get_transform("identity")
    if tr["name"] == "auto":
        return robust_t(tr["procedure"], int(tr["n"]), float(cfg["kl"]["target"]),
                        float(tr.get("t_tolerance", 0.0))).transform
    if tr["name"] == "optimal":
        from mmalign.align import optimal_transform

        return optimal_transform(tr["procedure"], int(tr["n"]), float(cfg["kl"]["target"]))
    return get_transform(tr["name"], t=tr.get("t"), k=tr.get("k"))


def analytic_win_rate(transform: Transform, procedure: str, n: int, kl: float) -> float | None:
    """Exact win rate of the tilt by ``transform`` at KL = ``kl`` (None when KL < 1e-3 or out of reach)."""
    from mmalign.align import evaluate, get_procedure
    from mmalign.errors import UserError

    if not math.isfinite(kl) or kl < KL_FLOOR:
        return None
    try:
        return float(evaluate(transform, get_procedure(procedure, n), kl).win_rate)
    except UserError:
        return None


def captured(win: float, analytic: float | None) -> float | None:
    """(W - 0.5) / (W_analytic - 0.5), None when the analytic gain is missing or tiny."""
    if analytic is None or analytic - 0.5 < 1e-6:
        return None
    return (win - 0.5) / (analytic - 0.5)


def eval_numbers(eval_dir: Path, transform: Transform, deploy: tuple[str, int]) -> dict:
    """KL, win rates (by procedure name) and captured fractions of one evaluation."""
    res = json.loads((eval_dir / "results.json").read_text())
    wins, analytic, per_prompt = {}, {}, {}
    for w in res["win_rates"]:
        p = w["procedure"]
        wins[p] = {"label": w["label"], "n": w["n"], "win_rate": w["win_rate"], "ci_low": w["ci_low"],
                   "ci_high": w["ci_high"]}
        per_prompt[p] = w["per_prompt"]
        analytic[p] = analytic_win_rate(transform, p, w["n"], res["kl"])
    dp = deploy[0]
    return {
        "kl": res["kl"], "kl_se": res["kl_se"], "num_prompts": res["num_prompts"],
        "samples_per_prompt": res["samples_per_prompt"], "win_rates": wins, "analytic": analytic,
        "captured": {"deploy": captured(wins[dp]["win_rate"], analytic[dp]) if dp in wins else None,
                     "standard": captured(wins["standard"]["win_rate"], analytic["standard"])
                     if "standard" in wins else None},
        "per_prompt": per_prompt,
    }


def run_point(out: Path, method: str, kl: float, seed: int) -> dict:
    """Every number of one (method, budget, seed): training log, both evaluations, timings."""
    run_dir = out / "runs" / run_name(method, kl, seed)
    cfg = snapshot(run_dir)
    transform, deploy = ideal_tilt(cfg), deployment(cfg)
    metrics = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines() if line.strip()]
    evals = {s: eval_numbers(out / "eval" / s / run_dir.name, transform, deploy) for s in EVAL_SETS}
    return {
        "method": method, "label": METHODS[method].label, "kl_target": kl, "seed": seed, "run": run_dir.name,
        "ideal_tilt": transform.describe(), "deploy": {"procedure": deploy[0], "n": deploy[1]},
        "beta_initial": metrics[0].get("beta"), "beta_final": metrics[-1].get("beta"),
        "train_kl_last5": _mean([m["kl"] for m in metrics[-5:] if "kl" in m]),
        "evals": evals,
        "timings_s": {"align": round(run_seconds(run_dir), 1),
                      **{f"eval_{s}": round(run_seconds(out / "eval" / s / run_dir.name), 1) for s in EVAL_SETS}},
    }


# ---------------------------------------------------------------------------------------------
# numbers over seeds and between methods
# ---------------------------------------------------------------------------------------------
def _mean(xs: list[float]) -> float | None:
    return sum(xs) / len(xs) if xs else None


def _spread(xs: list[float]) -> dict:
    """Mean, sample standard deviation (0 for one value), min, max and count of the non-None values."""
    v = [x for x in xs if x is not None]
    if not v:
        return {"mean": None, "sd": None, "min": None, "max": None, "n": 0}
    m = sum(v) / len(v)
    sd = math.sqrt(sum((x - m) ** 2 for x in v) / (len(v) - 1)) if len(v) > 1 else 0.0
    return {"mean": m, "sd": sd, "min": min(v), "max": max(v), "n": len(v)}


def aggregate(points: list[dict], prompt_set: str) -> list[dict]:
    """Per (method, budget): means and spreads over seeds on one prompt set, plus the seed-mean
    per-prompt win rates the paired comparisons use."""
    import numpy as np

    groups: dict[tuple[str, float], list[dict]] = {}
    for p in points:
        groups.setdefault((p["method"], p["kl_target"]), []).append(p)
    rows = []
    for (method, kl), pts in groups.items():
        ev = [p["evals"][prompt_set] for p in pts]
        procs = [q for q in PROCEDURE_ORDER if q in ev[0]["win_rates"]]
        rows.append({
            "method": method, "label": METHODS[method].label, "kl_target": kl, "prompt_set": prompt_set,
            "seeds": [p["seed"] for p in pts], "deploy": pts[0]["deploy"], "ideal_tilt": pts[0]["ideal_tilt"],
            "kl": _spread([e["kl"] for e in ev]),
            "win_rates": {q: _spread([e["win_rates"][q]["win_rate"] for e in ev]) for q in procs},
            "analytic": {q: _spread([e["analytic"][q] for e in ev]) for q in procs},
            "captured": {k: _spread([e["captured"][k] for e in ev]) for k in ("deploy", "standard")},
            "procedure_n": {q: ev[0]["win_rates"][q]["n"] for q in procs},
            "per_prompt": {q: [round(float(x), 5) for x in np.mean([e["per_prompt"][q] for e in ev], axis=0)]
                           for q in procs},
            "_single": {**ev[0]["win_rates"], "kl_se": ev[0]["kl_se"]},  # error bars when there is one seed
        })
    return sorted(rows, key=lambda r: (list(METHODS).index(r["method"]), r["kl_target"]))


def compare(aggs: list[dict], a: str, b: str, procedure: str, kl: float, prompt_set: str, reps: int) -> dict | None:
    """A - B on one procedure's win rate at one budget: per prompt (seed means), bootstrap 95% interval."""
    import numpy as np

    from mmalign.evaluation.stats import bootstrap_ci

    by = {(r["method"], r["kl_target"], r["prompt_set"]): r for r in aggs}
    ra, rb = by.get((a, kl, prompt_set)), by.get((b, kl, prompt_set))
    if ra is None or rb is None or procedure not in ra["per_prompt"] or procedure not in rb["per_prompt"]:
        return None
    d = np.asarray(ra["per_prompt"][procedure]) - np.asarray(rb["per_prompt"][procedure])
    lo, hi = bootstrap_ci(d, reps=reps, seed=0)
    kl_a, kl_b = ra["kl"]["mean"], rb["kl"]["mean"]
    matched = bool(kl_b and kl_b > 0 and abs(kl_a / kl_b - 1.0) <= KL_MATCH)
    return {"a": a, "b": b, "procedure": procedure, "kl_target": kl, "prompt_set": prompt_set,
            "difference": float(d.mean()), "ci_low": lo, "ci_high": hi, "prompts": int(d.size),
            "kl_a": kl_a, "kl_b": kl_b, "kl_matched": matched, "excludes_zero": bool(lo > 0 or hi < 0),
            "a_better": bool(lo > 0)}


def all_comparisons(aggs: list[dict], budgets: list[float], reps: int) -> list[dict]:
    """Every configured comparison at every budget on every prompt set (skipping absent methods)."""
    out = []
    for s in EVAL_SETS:
        for kl in budgets:
            for a, b, proc in COMPARISONS:
                c = compare(aggs, a, b, proc, kl, s, reps)
                if c is not None:
                    out.append(c)
    return out


def _needed(budgets: list[float]) -> int:
    """How many budgets a claim must hold at: 2 of 3 (two thirds, rounded up)."""
    return math.ceil(2 * len(budgets) / 3)


def _cmp_text(c: dict) -> str:
    return (f"KL target {c['kl_target']:g}: {c['difference']:+.3f} [{c['ci_low']:+.3f}, {c['ci_high']:+.3f}], "
            f"KL {c['kl_a']:.3f} vs {c['kl_b']:.3f} ({'matched' if c['kl_matched'] else 'not matched'})")


def beats_verdict(comps: list[dict], a: str, bs: list[str], procedure: str, prompt_set: str,
                  budgets: list[float], claim: str) -> dict:
    """``a`` beats every one of ``bs`` on ``procedure`` with an interval above 0 at matched KL,
    at >= 2/3 of the budgets."""
    by = {(c["a"], c["b"], c["procedure"], c["kl_target"], c["prompt_set"]): c for c in comps}
    good, details, missing = [], [], False
    for kl in budgets:
        cs = [by.get((a, b, procedure, kl, prompt_set)) for b in bs]
        if any(c is None for c in cs):
            missing = True
            continue
        if all(c["kl_matched"] and c["a_better"] for c in cs):
            good.append(kl)
        details += [f"{METHODS[a].label} − {METHODS[c['b']].label}, {_cmp_text(c)}" for c in cs]
    need = _needed(budgets)
    status = "not evaluated" if missing else ("holds" if len(good) >= need else "does not hold")
    return {"claim": claim, "prompt_set": prompt_set, "status": status, "budgets_ok": good, "needed": need,
            "of": len(budgets), "details": details}


def captured_verdict(aggs: list[dict], methods: list[str], budgets: list[float], claim: str) -> dict:
    """Seed-mean captured fraction (deployment procedure) >= 0.9 on training prompts, every budget."""
    by = {(r["method"], r["kl_target"]): r for r in aggs if r["prompt_set"] == "train"}
    details, ok, missing = [], True, False
    for m in methods:
        for kl in budgets:
            r = by.get((m, kl))
            if r is None:
                missing = True
                continue
            c = r["captured"]["deploy"]
            ok = ok and c["mean"] is not None and c["mean"] >= CAPTURED_BAR
            details.append(f"{METHODS[m].label} at KL target {kl:g}: "
                           + ("none (KL too small)" if c["mean"] is None
                              else f"{c['mean']:.2f}" + (f" (seeds {c['min']:.2f} to {c['max']:.2f})"
                                                         if c["n"] > 1 else "")))
    status = "not evaluated" if missing else ("holds" if ok else "does not hold")
    return {"claim": claim, "prompt_set": "train", "status": status, "details": details}


def verdicts(aggs: list[dict], comps: list[dict], budgets: list[float]) -> list[dict]:
    """The acceptance claims of the study, each decided by the numbers."""
    need = _needed(budgets)
    out = []
    for s in EVAL_SETS:
        out.append(beats_verdict(comps, "ctrl-exp", ["ctrl-identity", "raw"], "bon", s, budgets,
                                 f"CTRL-exp beats CTRL-identity and raw RLHF on best-of-4, interval excluding 0, "
                                 f"at matched KL, at >= {need} of {len(budgets)} budgets"))
        out.append(beats_verdict(comps, "ctrl-neg-exp", ["ctrl-identity"], "won", s, budgets,
                                 f"CTRL-neg_exp beats CTRL-identity on worst-of-4, interval excluding 0, "
                                 f"at matched KL, at >= {need} of {len(budgets)} budgets"))
    out.append(captured_verdict(aggs, ["ctrl-identity", "ctrl-exp"], budgets,
                                f"captured fraction >= {CAPTURED_BAR:g} on training prompts for CTRL-identity "
                                "and CTRL-exp at every budget"))
    return out


# ---------------------------------------------------------------------------------------------
# plots, settings, report
# ---------------------------------------------------------------------------------------------
CURVES = {"standard": ["identity", "log"], "bon": ["identity", "log", "exp", "optimal"],
          "won": ["identity", "neg_exp", "optimal"]}


def plots(aggs: list[dict], fig_dir: Path, quick: bool) -> list[Path]:
    """Win rate vs measured KL on the training prompts, one plot per procedure: seed means, error
    bars ± one seed sd (or the run's 95% interval and KL se with one seed), over the analytic curves."""
    from mmalign.evaluation.plots import frontier_curves, plot_winrate_vs_kl

    fig_dir.mkdir(parents=True, exist_ok=True)
    train = [r for r in aggs if r["prompt_set"] == "train"]
    # a runaway run (KL far past every budget) is left off the axes; its numbers are in the tables
    kl_max = min(3.0, max([1.5] + [1.25 * (r["kl"]["mean"] or 0.0) for r in train]))
    paths = []
    for proc in PROCEDURE_ORDER:
        rows = [r for r in train if proc in r["win_rates"]]
        if not rows:
            continue
        n = _proc_n(rows[0], proc)
        points = [_plot_point(r, proc) for r in rows if (r["kl"]["mean"] or 0.0) <= kl_max]
        curves = frontier_curves(proc, n, CURVES[proc], kl_max, 5 if quick else 16)
        name = "standard" if proc == "standard" else f"{'best' if proc == 'bon' else 'worst'}-of-{n}"
        title = f"{name} win rate vs KL on the training prompts (bundled task, toy Nano)"
        paths.append(plot_winrate_vs_kl(fig_dir / f"{proc}{'' if proc == 'standard' else n}_winrate_vs_kl.png",
                                        proc, n, points, curves, title=title))
    return paths


def _proc_n(agg: dict, proc: str) -> int:
    """N of a procedure in an aggregate (from the evaluation's own record)."""
    return int(agg["procedure_n"][proc])


def _plot_point(r: dict, proc: str) -> dict:
    """One plotted point: seed mean with ± sd error bars, or the single run's interval."""
    w, kl = r["win_rates"][proc], r["kl"]
    if w["n"] > 1:
        return {"label": r["label"], "kl": max(kl["mean"], 0.0), "kl_se": kl["sd"], "win_rate": w["mean"],
                "ci_low": w["mean"] - w["sd"], "ci_high": w["mean"] + w["sd"]}
    one = r["_single"][proc]
    return {"label": r["label"], "kl": max(kl["mean"], 0.0), "kl_se": r["_single"]["kl_se"], "win_rate": w["mean"],
            "ci_low": one["ci_low"], "ci_high": one["ci_high"]}


SETTING_KEYS = {
    "align": ["reward.kind", "data.path", "data.skip_rows", "data.max_rows", "train.steps", "rollout.prompts_per_step",
              "rollout.n", "rollout.max_new_tokens", "train.lr", "train.schedule", "train.epochs", "train.minibatches",
              "calibration.num_samples", "kl.estimator", "kl.mode", "kl.controller", "kl.horizon",
              "advantage.estimator"],
    "method": ["objective", "transform.name", "transform.procedure", "transform.n", "kl.beta"],
    "eval": ["prompts.path", "prompts.skip_rows", "prompts.max_rows", "samples_per_prompt", "selection_reward.kind",
             "run.seed", "sampling.max_new_tokens", "sampling.temperature", "bootstrap_reps"],
    "sft": ["train.steps", "train.batch_size", "train.lr", "data.path"],
}


def settings(out: Path, points: list[dict]) -> dict:
    """What actually ran, read from the run snapshots: SFT, the shared align settings (first run),
    each method's own keys, and each prompt set's evaluation settings."""
    first = {m: next(p for p in points if p["method"] == m) for m in METHODS if any(p["method"] == m for p in points)}
    any_run = out / "runs" / points[0]["run"]
    s = {"sft": {k: _get(snapshot(out / "runs/sft-nano"), k) for k in SETTING_KEYS["sft"]},
         "align": {k: _get(snapshot(any_run), k) for k in SETTING_KEYS["align"]},
         "methods": {m: {**{k: _get(snapshot(out / "runs" / p["run"]), k) for k in SETTING_KEYS["method"]},
                         "ideal_tilt": p["ideal_tilt"], "deploy": p["deploy"]} for m, p in first.items()},
         "eval": {}}
    for e in EVAL_SETS:
        snap = snapshot(out / "eval" / e / points[0]["run"])
        s["eval"][e] = {k: _get(snap, k) for k in SETTING_KEYS["eval"]}
        s["eval"][e]["procedures"] = [f"{p['name']} {p['n']}" for p in snap["procedures"]]
    return s


def _pm(s: dict, digits: int = 3) -> str:
    """mean ± sd over seeds (just the mean for one seed)."""
    if s["mean"] is None:
        return "–"
    return f"{s['mean']:.{digits}f}" + (f" ± {s['sd']:.{digits}f}" if s["n"] > 1 else "")


def _ci(w: dict) -> str:
    return f"{w['win_rate']:.3f} [{w['ci_low']:.3f}, {w['ci_high']:.3f}]"


def _proc_label(proc: str, n: int) -> str:
    return "standard" if proc == "standard" else f"{'best' if proc == 'bon' else 'worst'}-of-{n}"


def results_table(aggs: list[dict], prompt_set: str) -> list[str]:
    """Markdown table of seed means (± sd) on one prompt set."""
    rows = [r for r in aggs if r["prompt_set"] == prompt_set]
    procs = [q for q in PROCEDURE_ORDER if rows and q in rows[0]["win_rates"]]
    heads = [_proc_label(q, _proc_n(rows[0], q)) for q in procs] if rows else []
    lines = ["| method | KL target | seeds | measured KL | " + " | ".join(f"{h} win rate" for h in heads)
             + " | ideal tilt | captured (deployment) | captured (standard) |",
             "|---|---:|---:|---:|" + "---:|" * len(heads) + "---|---:|---:|"]
    for r in rows:
        d = r["deploy"]
        lines.append(f"| {r['label']} | {r['kl_target']:g} | {len(r['seeds'])} | {_pm(r['kl'])} | "
                     + " | ".join(_pm(r["win_rates"][q]) for q in procs)
                     + f" | {r['ideal_tilt']} | {_pm(r['captured']['deploy'], 2)} ({_proc_label(d['procedure'], d['n'])})"
                     f" | {_pm(r['captured']['standard'], 2)} |")
    return lines


def comparisons_table(comps: list[dict]) -> list[str]:
    """Markdown table of the paired comparisons."""
    lines = ["| prompts | KL target | comparison | win rate | A − B [95% CI] | measured KL A / B | KL matched | "
             "interval excludes 0 |", "|---|---:|---|---|---:|---:|---|---|"]
    for c in comps:
        lines.append(f"| {EVAL_SETS[c['prompt_set']][1]} | {c['kl_target']:g} | {METHODS[c['a']].label} − "
                     f"{METHODS[c['b']].label} | {c['procedure_label']} | {c['difference']:+.3f} "
                     f"[{c['ci_low']:+.3f}, {c['ci_high']:+.3f}] | {c['kl_a']:.3f} / {c['kl_b']:.3f} | "
                     f"{'yes' if c['kl_matched'] else 'no'} | {'yes' if c['excludes_zero'] else 'no'} |")
    return lines


def per_run_table(points: list[dict], prompt_set: str) -> list[str]:
    """Every run on one prompt set: KL ± se and each win rate with its bootstrap interval."""
    procs = [q for q in PROCEDURE_ORDER if q in points[0]["evals"][prompt_set]["win_rates"]]
    wr0 = points[0]["evals"][prompt_set]["win_rates"]
    lines = ["| run | measured KL ± se | " + " | ".join(f"{wr0[q]['label']} [95% CI]" for q in procs)
             + " | captured (deployment) | final β |", "|---|---:|" + "---|" * len(procs) + "---:|---:|"]
    for p in points:
        e = p["evals"][prompt_set]
        cap = e["captured"]["deploy"]
        beta = f"{p['beta_final']:.3g}" if p.get("beta_final") is not None else "–"
        lines.append(f"| {p['run']} | {e['kl']:.3f} ± {e['kl_se']:.3f} | "
                     + " | ".join(_ci(e["win_rates"][q]) for q in procs)
                     + f" | {'–' if cap is None else f'{cap:.2f}'} | {beta} |")
    return lines


def verdict_lines(vs: list[dict]) -> list[str]:
    """One bullet per verdict, with the numbers it was decided on."""
    lines = []
    for v in vs:
        where = EVAL_SETS[v["prompt_set"]][1]
        head = f"* **{v['status'].upper()}** ({where}): {v['claim']}."
        if "budgets_ok" in v:
            head += f" Holds at {len(v['budgets_ok'])} of {v['of']} budgets (needed {v['needed']})."
        lines.append(head + (" " + "; ".join(v["details"]) + "." if v["details"] else ""))
    return lines


def kept_reading(doc: Path) -> str:
    """The hand-written reading of an existing doc (between the markers), or a placeholder."""
    if doc.exists():
        old = doc.read_text(encoding="utf-8")
        if READING_BEGIN in old and READING_END in old:
            keep = old[old.index(READING_BEGIN) + len(READING_BEGIN):old.index(READING_END)].strip("\n")
            if keep:
                return keep
    return "_(No hand-written reading yet: see the computed verdicts above.)_"


def _rows_end(skip: int, max_rows: int | None) -> str:
    """End of a row slice as shown in the report ("end" when unbounded)."""
    return "end" if max_rows is None else str(skip + max_rows)


def _initial_beta(v: dict) -> str:
    """How a method's initial β was chosen, from its config snapshot."""
    if v["kl.beta"] is not None:
        return f"{v['kl.beta']:g}"
    if v["transform.name"] == "raw" and v["objective"] != "bond":
        return "the identity tilt's, scaled to the raw reward's spread"
    return "from the calculus"


def setup_lines(s: dict, info: dict) -> list[str]:
    """The "what ran" section, every setting from the run snapshots."""
    a, sft = s["align"], s["sft"]
    methods = "; ".join(f"{METHODS[m].label} (`{METHODS[m].config}`: "
                        + ("objective bond" if v["objective"] == "bond" else f"transform {v['transform.name']}")
                        + f", initial β {_initial_beta(v)}"
                        f", ideal tilt {v['ideal_tilt']}, deployed with "
                        f"{_proc_label(v['deploy']['procedure'], v['deploy']['n'])})"
                        for m, v in s["methods"].items())
    evals = [f"  * {EVAL_SETS[e][1]} (`{EVAL_SETS[e][0]}`): `{v['prompts.path']}` rows {v['prompts.skip_rows']}.."
             f"{_rows_end(v['prompts.skip_rows'], v['prompts.max_rows'])}, "
             f"{v['samples_per_prompt']} samples per prompt from each policy, procedures "
             f"{', '.join(v['procedures'])}, selection/judge reward `{v['selection_reward.kind']}`, eval seed "
             f"{v['run.seed']} for every method, {v['bootstrap_reps']} bootstrap resamples."
             for e, v in s["eval"].items()]
    same_reward = all(v["selection_reward.kind"] == a["reward.kind"] for v in s["eval"].values())
    return [
        f"* **Reference**: toy-width Nano (2 layers, width scale 1/16, 512-token BPE trained on the bundled SFT "
        f"text), SFT for {sft['train.steps']} steps (batch {sft['train.batch_size']}) on `{sft['data.path']}` "
        "(`sft_nano.yaml`), seed 0. Every method starts from it and is compared against it.",
        f"* **Alignment** (`mmalign align`, shared `align_base.yaml`): reward `{a['reward.kind']}`, "
        f"{a['train.steps']} RL steps x {a['rollout.prompts_per_step']} prompts x {a['rollout.n']} samples "
        f"(≤ {a['rollout.max_new_tokens']} new tokens), {a['train.epochs']} epoch(s) x {a['train.minibatches']} "
        f"minibatch(es), advantage {a['advantage.estimator']}, KL {a['kl.estimator']} in mode {a['kl.mode']}, "
        f"{a['kl.controller']} β (horizon {a['kl.horizon']:g}) steering the KL toward the budget, lr "
        f"{', '.join(f'{budget_lr(k):.3g}' for k in info['budgets'])} at budgets "
        f"{', '.join(f'{k:g}' for k in info['budgets'])} (align_base's {budget_lr(LR_REFERENCE_KL):g} x "
        f"sqrt(budget), the same for every method; {a['train.schedule']} decay), {a['data.max_rows']} training prompts (`{a['data.path']}` "
        f"rows {a['data.skip_rows']}..{_rows_end(a['data.skip_rows'], a['data.max_rows'])}). Calibration: K = "
        f"{a['calibration.num_samples']} reference samples per prompt, drawn once into one store shared by "
        f"every calibrated method, budget and seed. KL budgets {', '.join(f'{k:g}' for k in info['budgets'])}; "
        f"seeds {', '.join(str(x) for x in info['seeds'])} (run.seed). Same model, reward, prompts, RL code and "
        "budget for every method.",
        f"* **Methods**: {methods}.",
        "* **Evaluation** (`mmalign evaluate winrate`), every run on two prompt sets:",
        *evals,
        "  U-statistic win rates against the reference (ties count half), percentile-bootstrap 95% intervals over "
        "prompts, KL(π‖π_ref) = the exact per-token KL summed over the states of the policy's own samples "
        "(mean over prompts ± its standard error; the log-ratio estimate is in results.json).",
        *([] if same_reward else [f"* **Note**: the evaluation reward differs from the training reward "
                                  f"`{a['reward.kind']}`: win rates are not what the methods optimised."]),
        "* **Captured fraction** = (W − 0.5) / (W_analytic(KL) − 0.5): W is a run's measured win rate, "
        "W_analytic the exact win rate (calculus of `mmalign frontier`) of the method's own ideal tilt of the "
        "reference at the run's *measured* KL. Ideal tilts: identity for CTRL-identity and for raw RLHF (the "
        "best standard RLHF can reach: raw RLHF's optimum is not a tilt on the calibrated scale, identity is "
        "the standard-optimal one), exp / neg_exp at the t the run used (robust_t for its KL target: the flattest t within transform.t_tolerance of the best t's exact win rate), log for "
        "BOND (its score (N−1)·log c is the log tilt). Reported for the method's deployment procedure and for "
        f"standard sampling; none where the measured KL is below {KL_FLOOR:g}.",
        "* **Paired comparisons**: per prompt, each method's win rate averaged over its seeds, then A − B per "
        "prompt; percentile-bootstrap 95% interval over prompts. Every method meets the same prompts and the "
        f"same reference draws (same eval seed). KL is matched when |KL_A / KL_B − 1| ≤ {KL_MATCH:g}.",
    ]


def write_doc(doc: Path, points: list[dict], aggs: list[dict], comps: list[dict], vs: list[dict],
              figs: list[Path], info: dict) -> None:
    """The generated page; only the reading between the markers is kept from an old one."""
    rel_figs = [os.path.relpath(p, doc.parent) for p in figs]
    rel_json = os.path.relpath(info["results_json"], doc.parent)
    plot_note = ("seed means, error bars ± one standard deviation over seeds" if len(info["seeds"]) > 1
                 else "one seed: error bars are the run's 95% interval and KL standard error")
    lines = [
        "# InfAlign on the bundled text task: CTRL vs baselines at matched KL",
        "",
        f"Generated by `{info['command']}` on {info['date']} ({info['machine']}). The study took "
        f"{info['compute_min']:.1f} compute minutes (the SFT, {info['runs']} align runs and {2 * info['runs']} "
        f"evaluations, summed from their run logs); this invocation took {info['wall_min']:.1f} wall minutes"
        + (f" with {info['jobs']} runs at a time" if info.get("jobs", 1) > 1 else "")
        + (f" and reused {info.get('reused')} finished runs and evaluations (made by earlier invocations, some of them "
           "in parallel)." if info.get("reused") else ".")
        + (" **QUICK smoke run: tiny settings, not a result.**" if info["quick"] else ""),
        f"Every number is in [`{rel_json}`]({rel_json}).",
        "",
        "## What ran",
        "",
        *setup_lines(info["settings"], info),
        "",
        "## Computed verdicts",
        "",
        *verdict_lines(vs),
        "",
    ]
    for s in EVAL_SETS:
        lines += [f"## Results on the {EVAL_SETS[s][1]} (means over seeds ± sd)", "", *results_table(aggs, s), ""]
        if s == "train":
            lines += [f"Plots ({plot_note}), over the analytic curves of ideal tilts of the reference at each KL "
                      "(exp / neg_exp at their best t per KL, optimal = the best any policy can do):", "",
                      *[f"![{Path(p).stem}]({p})" for p in rel_figs], ""]
    lines += ["## Paired comparisons", "", *comparisons_table(comps), ""]
    for s in EVAL_SETS:
        lines += [f"<details><summary>Every run on the {EVAL_SETS[s][1]}</summary>", "", *per_run_table(points, s),
                  "", "</details>", ""]
    lines += [
        "## Reading", "", READING_BEGIN, kept_reading(doc), READING_END, "",
        "## Regenerate", "", "```", info["command"], "```", "",
        "Runs and per-run reports land in the --out directory (default `runs/reproduce/`): "
        "`runs/<method>-kl<target>-s<seed>/` (config snapshot, metrics.jsonl, final policy) and "
        "`eval/{train,heldout}/<method>-kl<target>-s<seed>/` (results.json, report.md, plots). Rerunning reuses "
        "finished runs whose config is unchanged; add `--fresh` to start over.", "",
    ]
    doc.parent.mkdir(parents=True, exist_ok=True)
    doc.write_text("\n".join(lines), encoding="utf-8")


def dump_json(obj: Any) -> str:
    """Indented JSON with lists of numbers kept on one line (per-prompt arrays stay readable)."""
    text = json.dumps(obj, indent=2)
    return re.sub(r"\[\s+([-0-9.eE,\s]+?)\s+\]", lambda m: "[" + re.sub(r"\s+", " ", m.group(1)) + "]", text) + "\n"


def _public(aggs: list[dict]) -> list[dict]:
    """Aggregates without the private helper keys."""
    return [{k: v for k, v in r.items() if not k.startswith("_")} for r in aggs]


def _strip_per_prompt(points: list[dict]) -> list[dict]:
    """Per-seed points without per-prompt arrays (those stay in each run's results.json)."""
    out = []
    for p in points:
        q = dict(p, evals={s: {k: v for k, v in e.items() if k != "per_prompt"} for s, e in p["evals"].items()})
        out.append(q)
    return out


# ---------------------------------------------------------------------------------------------
def parse_args(argv: list[str] | None) -> argparse.Namespace:
    """Command line: --quick, --out, --doc, --budgets, --seeds, --methods, --fresh, --jobs."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="tiny smoke version: 1 KL budget, 1 seed, a few steps")
    ap.add_argument("--out", default=None, help="study directory (default runs/reproduce, or runs/reproduce-quick)")
    ap.add_argument("--doc", default=None, help="report path (default docs/results/infalign_bundled.md; "
                                                 "with --quick: <out>/infalign_bundled.md)")
    ap.add_argument("--budgets", default=None, help="comma-separated KL targets (default 0.25,0.5,1.0; quick 0.5)")
    ap.add_argument("--seeds", default=None, help="comma-separated run.seed values (default 0,1,2; quick 0)")
    ap.add_argument("--methods", default=",".join(METHODS), help="comma-separated subset of " + ",".join(METHODS))
    ap.add_argument("--fresh", action="store_true", help="delete the --out directory first")
    ap.add_argument("--jobs", type=int, default=1,
                    help="runs at a time, each in its own process with cores/jobs threads (default 1: in this process)")
    args = ap.parse_args(argv)
    if args.jobs < 1:
        ap.error("--jobs must be at least 1")
    args.method_list = [m.strip() for m in args.methods.split(",") if m.strip()]
    unknown = [m for m in args.method_list if m not in METHODS]
    if unknown:
        ap.error(f"unknown method(s) {unknown}; choose from {list(METHODS)}")
    args.budget_list = ([float(x) for x in args.budgets.split(",")] if args.budgets
                        else list(QUICK_BUDGETS if args.quick else FULL_BUDGETS))
    args.seed_list = ([int(x) for x in args.seeds.split(",")] if args.seeds
                      else list(QUICK_SEEDS if args.quick else FULL_SEEDS))
    return args


def command_line(args: argparse.Namespace) -> str:
    """The regenerate command (without machine paths)."""
    cmd = "python scripts/reproduce_infalign.py" + (" --quick" if args.quick else "")
    for flag in ("budgets", "seeds"):
        if getattr(args, flag):
            cmd += f" --{flag} {getattr(args, flag)}"
    if args.methods != ",".join(METHODS):
        cmd += f" --methods {args.methods}"
    if args.jobs > 1:
        cmd += f" --jobs {args.jobs}"
    threads = os.environ.get("OMP_NUM_THREADS")
    return (f"OMP_NUM_THREADS={threads} " if threads else "") + cmd


def prepare_out(args: argparse.Namespace) -> tuple[Path, Path]:
    """The study directory (checked against the mode it holds) and the doc path, both absolute."""
    out = Path(args.out or ("runs/reproduce-quick" if args.quick else "runs/reproduce")).expanduser()
    out = out if out.is_absolute() else (Path.cwd() / out)
    doc = Path(args.doc).expanduser() if args.doc else (out / "infalign_bundled.md" if args.quick
                                                        else REPO / "docs/results/infalign_bundled.md")
    doc = doc if doc.is_absolute() else (Path.cwd() / doc)
    if args.fresh and out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True, exist_ok=True)
    manifest = out / "study.json"
    if manifest.exists() and json.loads(manifest.read_text()).get("quick") != args.quick:
        sys.exit(f"{out} holds a {'quick' if not args.quick else 'full'} study; use another --out or --fresh")
    manifest.write_text(json.dumps({"quick": args.quick}) + "\n")
    return out, doc


def run_study(runner: Runner, out: Path, args: argparse.Namespace) -> list[dict]:
    """Reference, then every (seed, budget, method): align, evaluate on both prompt sets, collect."""
    reference = build_reference(out, args.quick)

    def one(seed: int, kl: float, method: str) -> dict:
        run_dir = align_one(runner, out, reference, method, kl, seed, args.quick)
        for s in EVAL_SETS:
            evaluate_one(runner, out, reference, run_dir, method, s, args.quick)
        p = run_point(out, method, kl, seed)
        e = p["evals"]["train"]
        print(f"  {p['label']:>18} KL target {kl:g} seed {seed}: KL {e['kl']:.3f} ± {e['kl_se']:.3f}  "
              + "  ".join(f"{w['label']} {_ci(w)}" for w in e["win_rates"].values()), flush=True)
        return p

    todo = [(seed, kl, method) for seed in args.seed_list for kl in args.budget_list for method in args.method_list]
    if runner.jobs == 1:  # in this process, on its main thread (the CLI installs signal handlers)
        return [one(*job) for job in todo]
    first = one(*todo[0])  # alone: it fills the study's calibration store, which the others then read
    with ThreadPoolExecutor(max_workers=runner.jobs) as pool:  # results in the order above, whatever finishes first
        return [first, *pool.map(lambda job: one(*job), todo[1:])]


def summarise(points: list[dict], budgets: list[float], reps: int) -> tuple[list[dict], list[dict], list[dict]]:
    """Aggregates over seeds, paired comparisons and verdicts."""
    aggs = [r for s in EVAL_SETS for r in aggregate(points, s)]
    comps = all_comparisons(aggs, budgets, reps)
    n_of = {(r["prompt_set"], q): v for r in aggs for q, v in r["procedure_n"].items()}
    for c in comps:
        c["procedure_label"] = _proc_label(c["procedure"], n_of[(c["prompt_set"], c["procedure"])])
    return aggs, comps, verdicts(aggs, comps, budgets)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    runner = Runner(jobs=args.jobs)
    os.chdir(REPO)
    out, doc = prepare_out(args)
    check_eval_configs()
    started = time.time()
    points = run_study(runner, out, args)
    reps = int(snapshot(out / "eval" / "train" / points[0]["run"])["bootstrap_reps"])
    aggs, comps, vs = summarise(points, args.budget_list, reps)
    fig_dir = doc.parent / doc.stem
    figs = plots(aggs, fig_dir, args.quick)
    timings = {p["run"]: p["timings_s"] for p in points}
    compute_s = run_seconds(out / "runs/sft-nano") + sum(sum(t.values()) for t in timings.values())
    info = {
        "command": command_line(args), "date": _dt.date.today().isoformat(),
        "machine": f"{os.cpu_count()}-core {platform.machine()} CPU", "quick": args.quick,
        "wall_min": (time.time() - started) / 60, "jobs": runner.jobs, "reused": len(runner.reused), "compute_min": compute_s / 60, "runs": len(points),
        "budgets": args.budget_list, "seeds": args.seed_list, "methods": args.method_list,
        "settings": settings(out, points), "results_json": fig_dir / "results.json",
    }
    results = {
        "info": {k: v for k, v in info.items() if k != "results_json"},
        "timings_s": {"sft": round(run_seconds(out / "runs/sft-nano"), 1), "runs": timings,
                      "compute_total": round(compute_s, 1), "wall_invocation": round(info["wall_min"] * 60, 1)},
        "points": _strip_per_prompt(points), "aggregates": _public(aggs), "comparisons": comps, "verdicts": vs,
    }
    (fig_dir / "results.json").write_text(dump_json(results), encoding="utf-8")
    write_doc(doc, points, aggs, comps, vs, figs, info)
    print(f"\nStudy finished in {info['wall_min']:.1f} min ({info['compute_min']:.1f} compute min). Report: {_rel(doc)}")
    for v in vs:
        print(f"  {v['status']:>14}: {v['claim']} ({EVAL_SETS[v['prompt_set']][1]})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
