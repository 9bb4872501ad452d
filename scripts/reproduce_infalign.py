"""Reproduce InfAlign (CTRL for best-of-N) on the bundled text task, end to end, on CPU.

    python scripts/reproduce_infalign.py            # the full study (~15 min on 2 CPU cores)
    python scripts/reproduce_infalign.py --quick    # a tiny smoke version (~3 min)

1. Reference: a toy-width Nano (`mmalign zoo init nano`, tokenizer trained on the bundled SFT
   text), supervised fine-tuned on the bundled task (`mmalign sft configs/reproduce/sft_nano.yaml`),
   built under the study's own --out directory with fixed seeds.
2. Alignment (`mmalign align`), every method sharing configs/reproduce/align_base.yaml, at each KL
   budget (kl.target with the adaptive controller):
     * CTRL-exp (bo4)  calibrated reward, exp(t·c), t and initial beta from the frontier calculus
     * CTRL-identity   calibrated reward, no transform
     * raw RLHF        the raw reward
     * BOND (bo4)      best-of-4 distillation (Jeffreys divergence)
3. Evaluation (`mmalign evaluate winrate configs/reproduce/winrate.yaml`): standard and best-of-4
   win rates against the reference on the same held-out prompts, bootstrap 95% intervals, and the
   measured KL(π‖π_ref).
4. Report: a markdown table and two plots (win rate vs measured KL, with the analytic identity /
   exp / optimal curves behind the points), written to --doc (default
   docs/results/infalign_bundled.md for the full study, <out>/infalign_bundled.md for --quick).

Completed steps are reused when the script is rerun with the same --out and mode (a run counts as
complete when it wrote its DONE marker / results.json); --fresh starts over.
A hand-written reading between the `<!-- reading:begin -->` and `<!-- reading:end -->` markers of
an existing doc is kept when the doc is regenerated.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import os
import platform
import shutil
import sys
import time
from pathlib import Path

from demo import (  # scripts/demo.py: offline environment, in-process runner, tokenizer text
    corpus,
    mmalign,
)

REPO = Path(__file__).resolve().parents[1]
CONFIGS = Path("configs/reproduce")

# method key -> (config file, label in tables and plots)
METHODS = {
    "ctrl-exp": ("ctrl_exp.yaml", "CTRL-exp (bo4)"),
    "ctrl-identity": ("ctrl_identity.yaml", "CTRL-identity"),
    "raw": ("raw.yaml", "raw RLHF"),
    "bond": ("bond.yaml", "BOND (bo4)"),
}
FULL_BUDGETS = (0.25, 0.5, 1.0)
QUICK_BUDGETS = (0.5,)

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
# 1. the reference
# ---------------------------------------------------------------------------------------------
def build_reference(out: Path, quick: bool) -> Path:
    reference = out / "runs/sft-nano/final"
    if (out / "runs/sft-nano/DONE").exists() and (reference / "config.json").exists():
        print(f"reusing the study's SFT reference in {_rel(reference)}")
        return reference
    out.mkdir(parents=True, exist_ok=True)
    init = out / "nano-init"
    mmalign("zoo", "init", "nano", "--out", str(init), "--width-scale", "0.0625", "--layers", "2",
            "--vocab-size", "512", "--text", str(corpus(out)), "--seed", "0", "--overwrite", "-q")
    mmalign("sft", str(CONFIGS / "sft_nano.yaml"), f"run.output_dir={out / 'runs'}", f"model.path={init}",
            *(QUICK_SFT if quick else []), "--overwrite", "-q")
    return reference


# ---------------------------------------------------------------------------------------------
# 2-3. align and evaluate one (method, KL budget)
# ---------------------------------------------------------------------------------------------
def run_name(method: str, kl: float) -> str:
    return f"{method}-kl{kl:g}"


def align_one(out: Path, reference: Path, method: str, kl: float, quick: bool) -> Path:
    name = run_name(method, kl)
    run_dir = out / "runs" / name
    if (run_dir / "DONE").exists() and (run_dir / "final/config.json").exists():
        print(f"reusing {_rel(run_dir)}")
        return run_dir / "final"
    overrides = [f"run.name={name}", f"run.output_dir={out / 'runs'}", f"model.path={reference}", f"kl.target={kl}",
                 f"calibration.store={out / 'runs' / f'calibration-{method}.safetensors'}"]  # reused across budgets
    mmalign("align", str(CONFIGS / METHODS[method][0]), *overrides, *(QUICK_ALIGN if quick else []),
            "--overwrite", "-q")
    return run_dir / "final"


def evaluate_one(out: Path, reference: Path, policy: Path, method: str, kl: float, quick: bool) -> dict:
    name = run_name(method, kl)
    results = out / "eval" / name / "results.json"
    if not results.exists():
        mmalign("evaluate", "winrate", str(CONFIGS / "winrate.yaml"), f"run.name={name}",
                f"run.output_dir={out / 'eval'}", f"policy.path={policy}", f"reference.path={reference}",
                f"label={METHODS[method][1]}", *(QUICK_EVAL if quick else []), "--overwrite", "-q")
    return json.loads(results.read_text())


# ---------------------------------------------------------------------------------------------
# 4. the report
# ---------------------------------------------------------------------------------------------
def collect(out: Path, method: str, kl: float, res: dict) -> dict:
    """One row: method, KL target, measured KL, win rates, and what the training log says."""
    run_dir = out / "runs" / run_name(method, kl)
    metrics = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines() if line.strip()]
    last = metrics[-5:]
    wr = {w["label"]: w for w in res["win_rates"]}
    return {
        "method": method, "label": METHODS[method][1], "kl_target": kl, "kl": res["kl"], "kl_se": res["kl_se"],
        "standard": wr["standard"], "bo4": wr["best-of-4"],
        "policy_reward": res["policy_judge_reward_mean"], "reference_reward": res["reference_judge_reward_mean"],
        "train_kl_last5": sum(m["kl"] for m in last) / len(last),
        "beta_final": metrics[-1].get("beta"), "beta_initial": metrics[0].get("beta"),
    }


def analytic(rows: list[dict]) -> None:
    """Add, for each row, the analytic win rates of the identity / exp / optimal tilts at its measured KL."""
    from mmalign.align import best_t, beta_for_kl, get_transform, optimal_policy, win_rate

    ident = get_transform("identity")
    for r in rows:
        kl = r["kl"]
        if kl <= 1e-3:
            r["analytic"] = None
            continue
        b = beta_for_kl(ident, kl)
        opt = optimal_policy("bon", 4, kl)
        r["analytic"] = {
            "standard_identity": win_rate(ident, b, "standard", 1),  # the optimum for standard sampling
            "bo4_identity": win_rate(ident, b, "bon", 4),
            "bo4_exp": best_t("bon", 4, kl).win_rate,
            "bo4_optimal": float(opt.win_rate) if hasattr(opt, "win_rate") else float("nan"),
        }


def tie_ceiling(out: Path, reference: Path, quick: bool) -> dict:
    """The best win rate any policy can reach here: a policy that always gives the gold answer.

    The gold reward is discrete (a correct answer gets the category's maximum), so a reference that
    is often right ties often, and ties count half. The ceiling per prompt is
    P(T(π_ref) < max) + ½ P(T(π_ref) = max), estimated from fresh reference samples on the
    evaluation prompts (U-statistic weights, as in the evaluation)."""
    import numpy as np
    import torch
    import yaml

    from mmalign.config.schemas.data import DataConfig
    from mmalign.data import load_prompts
    from mmalign.evaluation.winrate import Procedure, prompt_win_rate
    from mmalign.models.loading import load_policy
    from mmalign.rewards.bundled import CATEGORY_RANGES, gold_reward, parse_prompt

    cache = out / "ceiling.json"
    if cache.exists():
        return json.loads(cache.read_text())
    ev = yaml.safe_load((CONFIGS / "winrate.yaml").read_text())
    rows = 8 if quick else ev["prompts"]["max_rows"]
    m = 4 if quick else ev["samples_per_prompt"]
    prompts = [r.prompt for r in load_prompts(DataConfig(path=ev["prompts"]["path"], max_rows=rows))]
    policy = load_policy(str(reference), run_device="cpu", run_dtype="float32", chat_template="off")
    gen = torch.Generator().manual_seed(2)
    with torch.no_grad():
        texts = policy.sample(prompts, m, max_new_tokens=ev["sampling"]["max_new_tokens"], generator=gen).texts
    res = {}
    for name, n in (("standard", 1), ("bo4", 4)):
        per = []
        for i, x in enumerate(prompts):
            ref = np.array([gold_reward(x, y) for y in texts[i * m:(i + 1) * m]])
            offset, scale = CATEGORY_RANGES[parse_prompt(x)[0]]
            best = np.full(m, offset + scale)
            per.append(prompt_win_rate(best, best, ref, ref, Procedure("standard" if n == 1 else "bon", n)))
        res[name] = float(np.mean(per))
    res["prompts"], res["samples"] = len(prompts), m
    cache.write_text(json.dumps(res) + "\n")
    return res


def plots(rows: list[dict], fig_dir: Path, quick: bool, ceiling: dict) -> list[Path]:
    from mmalign.evaluation.plots import frontier_curves, plot_winrate_vs_kl

    fig_dir.mkdir(parents=True, exist_ok=True)
    # plot_winrate_vs_kl puts its legend in the lower right: draw the curves far enough right that
    # the measured points (win rates near 0.5, KL <= ~1.3) stay left of it
    kl_max = max([2.5] + [2.2 * r["kl"] for r in rows])
    n_pts = 6 if quick else 14
    paths = []
    for key, proc, n, fname in (("bo4", "bon", 4, "bo4_winrate_vs_kl.png"),
                                ("standard", "standard", 1, "standard_winrate_vs_kl.png")):
        points = [{"label": r["label"], "kl": max(r["kl"], 0.0), "kl_se": r["kl_se"], "win_rate": r[key]["win_rate"],
                   "ci_low": r[key]["ci_low"], "ci_high": r[key]["ci_high"]} for r in rows]
        curves = frontier_curves(proc, n, ["identity", "exp", "optimal"], kl_max, n_pts)
        # drawn as a flat line: the most any policy can win once ties on the discrete gold reward count half
        curves["max possible here (ties count half)"] = ([0.0, kl_max], [ceiling[key], ceiling[key]])
        title = ("best-of-4 win rate vs KL (bundled task, toy Nano)" if proc == "bon"
                 else "standard win rate vs KL (bundled task, toy Nano)")
        paths.append(plot_winrate_vs_kl(fig_dir / fname, proc, n, points, curves, title=title))
    return paths


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


def _ci(w: dict) -> str:
    return f"{w['win_rate']:.3f} [{w['ci_low']:.3f}, {w['ci_high']:.3f}]"


def verdicts(rows: list[dict], budgets: list[float]) -> list[str]:
    """Data-driven checks of the paper's claims (computed, not hand-written)."""
    by = {(r["method"], r["kl_target"]): r for r in rows}
    lines = []

    def cmp(a: str, b: str, key: str, what: str) -> None:
        wins = sig = 0
        details = []
        for kl in budgets:
            ra, rb = by.get((a, kl)), by.get((b, kl))
            if ra is None or rb is None:
                continue
            d = ra[key]["win_rate"] - rb[key]["win_rate"]
            wins += d > 0
            separated = ra[key]["ci_low"] > rb[key]["ci_high"] or rb[key]["ci_low"] > ra[key]["ci_high"]
            sig += separated
            details.append(f"KL target {kl:g}: {d:+.3f} (measured KL {ra['kl']:.2f} vs {rb['kl']:.2f}"
                           f"{', intervals disjoint' if separated else ', intervals overlap'})")
        if details:
            lines.append(f"* {METHODS[a][1]} − {METHODS[b][1]}, {what}: higher at {wins}/{len(details)} budgets; "
                         + "; ".join(details) + ".")

    for b in ("ctrl-identity", "raw", "bond"):
        cmp("ctrl-exp", b, "bo4", "best-of-4 win rate")
    cmp("ctrl-identity", "raw", "standard", "standard win rate")
    cmp("ctrl-identity", "raw", "bo4", "best-of-4 win rate")
    # KL-adjusted: excess over the analytic identity curve at the measured KL
    ex = {}
    for r in rows:
        if r.get("analytic"):
            ex.setdefault(r["method"], []).append(r["bo4"]["win_rate"] - r["analytic"]["bo4_identity"])
    if ex:
        lines.append("* KL-adjusted (best-of-4 win rate minus the analytic identity tilt's at the same measured KL, "
                     "mean over budgets): " + ", ".join(f"{METHODS[m][1]} {sum(v) / len(v):+.3f}"
                                                        for m, v in ex.items()) + ".")
    return lines


def write_doc(doc: Path, rows: list[dict], fig_paths: list[Path], info: dict) -> None:
    budgets = sorted({r["kl_target"] for r in rows})
    rel_figs = [os.path.relpath(p, doc.parent) for p in fig_paths]
    keep = ""
    if doc.exists():
        old = doc.read_text(encoding="utf-8")
        if READING_BEGIN in old and READING_END in old:
            keep = old[old.index(READING_BEGIN) + len(READING_BEGIN):old.index(READING_END)].strip("\n")
    if not keep:
        keep = "_(No hand-written reading yet: see the computed checks above.)_"
    s = info["settings"]
    lines = [
        "# InfAlign on the bundled text task: CTRL vs baselines at matched KL",
        "",
        f"Generated by `{info['command']}` on {info['date']} ({info['machine']}); "
        f"compute {info['compute_min']:.1f} min (SFT + every align and evaluation run, summed from their run "
        f"logs; this invocation {info['wall_min']:.1f} min){' (QUICK smoke run: not a result)' if info['quick'] else ''}.",
        "",
        "What ran (all configs in `configs/reproduce/`):",
        "",
        f"* **Reference**: toy-width Nano (2 layers, width scale 1/16, 512-token BPE trained on the bundled SFT "
        f"text), SFT for {s['sft_steps']} steps on `bundled:text/sft_train` (`sft_nano.yaml`), seed 0.",
        f"* **Alignment** (`mmalign align`, shared `align_base.yaml`): {s['align_steps']} RL steps x "
        f"{s['prompts_per_step']} prompts x {s['rollout_n']} samples, RLOO, k1 KL in the reward, adaptive β "
        f"(horizon {s['horizon']:g}) steering the per-sequence KL toward the target, lr {s['lr']:g}, "
        f"{s['train_prompts']} training prompts, calibration with K = {s['K']} reference samples per prompt "
        f"(one store per method, reused across its budgets; the reference samples are seeded by prompt, so every method calibrates against the same ones). Methods: CTRL-exp (`transform.name: auto`, best-of-4: exp(t·c) "
        f"with t and the initial β from the frontier calculus), CTRL-identity (calibrated, initial β from the "
        f"calculus), raw RLHF (raw gold reward, initial β = {s['raw_beta']:g}), BOND (best-of-4 distillation, "
        f"Jeffreys divergence, initial β = {s['bond_beta']:g}).",
        f"* **Evaluation** (`mmalign evaluate winrate`, `winrate.yaml`): {s['eval_prompts']} held-out prompts "
        f"(`bundled:text/prompts_eval`), {s['samples']} samples per prompt from each policy, gold reward as "
        "selection and judge, U-statistic win rates (ties half), percentile-bootstrap 95% intervals over prompts, "
        "KL(π‖π_ref) = mean sequence log-ratio on the policy's samples ± its standard error over prompts. "
        "Same prompts and seed for every method.",
        "",
        "## Results",
        "",
        "| method | KL target | measured KL ± se | standard win rate [95% CI] | best-of-4 win rate [95% CI] "
        "| analytic bo4 at this KL: identity / exp / optimal | final β |",
        "|---|---:|---:|---|---|---|---:|",
    ]
    for r in sorted(rows, key=lambda r: (list(METHODS).index(r["method"]), r["kl_target"])):
        a = r.get("analytic")
        an = (f"{a['bo4_identity']:.3f} / {a['bo4_exp']:.3f} / {a['bo4_optimal']:.3f}" if a else "–")
        beta = f"{r['beta_final']:.3g}" if r.get("beta_final") is not None else "–"
        lines.append(f"| {r['label']} | {r['kl_target']:g} | {r['kl']:.3f} ± {r['kl_se']:.3f} | {_ci(r['standard'])} "
                     f"| {_ci(r['bo4'])} | {an} | {beta} |")
    lines += [
        "",
        f"**Ceiling.** The gold reward is discrete (a correct answer always gets the category's maximum, and many "
        f"wrong answers share a score), so outputs tie often and ties count half. That caps what any policy can reach: a policy that always gives the gold answer would win "
        f"{info['ceiling']['standard']:.3f} (standard) and {info['ceiling']['bo4']:.3f} (best-of-4) against this "
        f"reference (estimated from {info['ceiling']['samples']} fresh reference samples on each of the "
        f"{info['ceiling']['prompts']} evaluation prompts). The analytic curves assume a continuous reward (no ties) "
        "and so can exceed it; the flat line in the plots marks it.",
        "",
        "Win rates are against the SFT reference (0.5 = no better). The analytic columns are what the exact "
        "calculus (`mmalign frontier`) gives for an ideal tilt of the reference at the *measured* KL: identity is "
        "standard RLHF's optimum, exp is CTRL-exp at its best t, optimal is the best any policy can do.",
        "",
        *[f"![{Path(p).stem}]({p})" for p in rel_figs],
        "",
        "## Computed checks",
        "",
        *verdicts(rows, budgets),
        "",
        "## Reading",
        "",
        READING_BEGIN,
        keep,
        READING_END,
        "",
        "## Regenerate",
        "",
        "```",
        info["command"],
        "```",
        "",
        "Runs and per-run reports land in the --out directory (default `runs/reproduce/`): `runs/<method>-kl<target>/` "
        "(config snapshot, metrics.jsonl, final policy) and `eval/<method>-kl<target>/` (results.json, report.md, "
        "plots). Rerunning reuses finished runs in the same --out; add `--fresh` to start over.",
        "",
    ]
    doc.parent.mkdir(parents=True, exist_ok=True)
    doc.write_text("\n".join(lines), encoding="utf-8")


# ---------------------------------------------------------------------------------------------
def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="tiny smoke version: 1 KL budget, a few steps (~3 min)")
    ap.add_argument("--out", default=None, help="study directory (default runs/reproduce, or runs/reproduce-quick)")
    ap.add_argument("--doc", default=None, help="report path (default docs/results/infalign_bundled.md; "
                                                 "with --quick: <out>/infalign_bundled.md)")
    ap.add_argument("--budgets", default=None, help="comma-separated KL targets (default 0.25,0.5,1.0; quick 0.5)")
    ap.add_argument("--methods", default=",".join(METHODS), help="comma-separated subset of " + ",".join(METHODS))
    ap.add_argument("--fresh", action="store_true", help="delete the --out directory first")
    args = ap.parse_args(argv)

    out = Path(args.out or ("runs/reproduce-quick" if args.quick else "runs/reproduce")).expanduser()
    out = out if out.is_absolute() else (Path.cwd() / out)
    doc = Path(args.doc).expanduser() if args.doc else (out / "infalign_bundled.md" if args.quick
                                                        else REPO / "docs/results/infalign_bundled.md")
    doc = doc if doc.is_absolute() else (Path.cwd() / doc)
    budgets = ([float(x) for x in args.budgets.split(",")] if args.budgets
               else list(QUICK_BUDGETS if args.quick else FULL_BUDGETS))
    methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    unknown = [m for m in methods if m not in METHODS]
    if unknown:
        ap.error(f"unknown method(s) {unknown}; choose from {list(METHODS)}")

    os.chdir(REPO)
    if args.fresh and out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True, exist_ok=True)
    manifest = out / "study.json"
    mode = {"quick": args.quick}
    if manifest.exists() and json.loads(manifest.read_text()).get("quick") != args.quick:
        sys.exit(f"{out} holds a {'quick' if not args.quick else 'full'} study; use another --out or --fresh")
    manifest.write_text(json.dumps(mode) + "\n")

    started = time.time()
    reference = build_reference(out, args.quick)
    rows, timings = [], {}
    for kl in budgets:
        for method in methods:
            policy = align_one(out, reference, method, kl, args.quick)
            res = evaluate_one(out, reference, policy, method, kl, args.quick)
            timings[run_name(method, kl)] = round(run_seconds(out / "runs" / run_name(method, kl))
                                                  + run_seconds(out / "eval" / run_name(method, kl)), 1)
            rows.append(collect(out, method, kl, res))
            r = rows[-1]
            print(f"  {r['label']:>16} KL target {kl:g}: KL {r['kl']:.3f} ± {r['kl_se']:.3f}  "
                  f"standard {_ci(r['standard'])}  best-of-4 {_ci(r['bo4'])}", flush=True)
    analytic(rows)
    fig_dir = doc.parent / doc.stem
    ceiling = tie_ceiling(out, reference, args.quick)
    figs = plots(rows, fig_dir, args.quick, ceiling)

    import yaml

    base = yaml.safe_load((CONFIGS / "align_base.yaml").read_text())
    sft = yaml.safe_load((CONFIGS / "sft_nano.yaml").read_text())
    ev = yaml.safe_load((CONFIGS / "winrate.yaml").read_text())

    def quick_val(over: list[str], key: str, default):
        for o in over:
            k, _, v = o.partition("=")
            if k == key:
                return yaml.safe_load(v)
        return default

    q = args.quick
    settings = {
        "sft_steps": quick_val(QUICK_SFT if q else [], "train.steps", sft["train"]["steps"]),
        "align_steps": quick_val(QUICK_ALIGN if q else [], "train.steps", base["train"]["steps"]),
        "prompts_per_step": quick_val(QUICK_ALIGN if q else [], "rollout.prompts_per_step",
                                      base["rollout"]["prompts_per_step"]),
        "rollout_n": base["rollout"]["n"], "horizon": base["kl"]["horizon"], "lr": base["train"]["lr"],
        "train_prompts": quick_val(QUICK_ALIGN if q else [], "data.max_rows", base["data"]["max_rows"]),
        "K": quick_val(QUICK_ALIGN if q else [], "calibration.num_samples", base["calibration"]["num_samples"]),
        "raw_beta": yaml.safe_load((CONFIGS / "raw.yaml").read_text())["kl"]["beta"],
        "bond_beta": yaml.safe_load((CONFIGS / "bond.yaml").read_text())["kl"]["beta"],
        "eval_prompts": quick_val(QUICK_EVAL if q else [], "prompts.max_rows", ev["prompts"]["max_rows"]),
        "samples": quick_val(QUICK_EVAL if q else [], "samples_per_prompt", ev["samples_per_prompt"]),
    }
    cmd = "python scripts/reproduce_infalign.py" + (" --quick" if q else "")
    if args.budgets:
        cmd += f" --budgets {args.budgets}"
    if args.methods != ",".join(METHODS):
        cmd += f" --methods {args.methods}"
    threads = os.environ.get("OMP_NUM_THREADS")
    info = {
        "command": (f"OMP_NUM_THREADS={threads} " if threads else "") + cmd,
        "date": _dt.date.today().isoformat(),
        "machine": f"{os.cpu_count()}-core {platform.machine()} CPU",
        "wall_min": (time.time() - started) / 60,
        "compute_min": (run_seconds(out / "runs/sft-nano") + sum(timings.values())) / 60, "quick": q, "settings": settings, "ceiling": ceiling,
    }
    write_doc(doc, rows, figs, info)
    (out / "summary.json").write_text(json.dumps({"rows": rows, "timings_s": timings, "info": info}, indent=2) + "\n")
    print(f"\nStudy finished in {info['wall_min']:.1f} min. Report: {_rel(doc)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
