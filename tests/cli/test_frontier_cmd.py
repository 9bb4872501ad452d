"""``mmalign frontier`` and ``mmalign frontier recommend``."""

from __future__ import annotations

import json

import pytest

from mmalign.cli.main import main

KEYS = {"procedure", "n", "transform", "t", "beta", "kl", "win_rate"}


def _run(capsys, *argv):
    try:
        code = main(list(argv))
    except SystemExit as exc:  # argparse usage errors exit directly
        code = exc.code
    out = capsys.readouterr()
    return code, out.out, out.err


def test_acceptance_command_json(capsys):
    code, out, _ = _run(capsys, "frontier", "--procedure", "bon", "--n", "4", "--kl", "0.1,0.25,0.5,1",
                        "--transform", "identity,log,exp,optimal", "--json")
    assert code == 0
    records = json.loads(out)  # stdout holds only the JSON
    assert isinstance(records, list) and len(records) == 16
    assert all(set(r) == KEYS for r in records)
    by = {}
    for r in records:
        assert r["procedure"] == "bon" and r["n"] == 4
        assert 0.5 < r["win_rate"] < 1 and r["beta"] > 0
        assert (r["t"] is not None) == (r["transform"] == "exp")
        by.setdefault(r["transform"], []).append(r)
    assert list(by) == ["identity", "log", "exp", "optimal"]
    for rows in by.values():
        assert [r["kl"] for r in rows] == [0.1, 0.25, 0.5, 1.0]
        wins = [r["win_rate"] for r in rows]
        betas = [r["beta"] for r in rows]
        assert wins == sorted(wins) and len(set(wins)) == 4  # win rate increases with KL
        assert betas == sorted(betas, reverse=True)  # beta decreases with KL
    for i in range(4):
        best = max(by[name][i]["win_rate"] for name in ("identity", "log", "exp"))
        assert by["optimal"][i]["win_rate"] >= best - 1e-9
        assert by["optimal"][i]["win_rate"] - by["exp"][i]["win_rate"] < 0.005


def test_table_with_fixed_t_and_repeated_flags(capsys):
    code, out, _ = _run(capsys, "frontier", "--procedure", "won", "--n", "2", "--kl", "0.1", "--kl", "0.5",
                        "--transform", "neg_exp", "--transform", "power", "--t", "4", "--k", "2")
    assert code == 0
    lines = out.strip().splitlines()
    assert "worst-of-N, N=2" in lines[0]
    assert lines[1].split() == ["transform", "t", "beta", "KL", "win", "rate"]
    rows = [line.split() for line in lines[2:]]
    assert [r[0] for r in rows] == ["neg_exp", "neg_exp", "power", "power"]
    assert rows[0][1] == "4.000" and rows[2][1] == "-"


def test_recommend(capsys):
    code, out, _ = _run(capsys, "frontier", "recommend", "--procedure", "bon", "--n", "4", "--kl", "0.5", "--json")
    assert code == 0
    rec = json.loads(out)
    assert rec["transform"] == "exp" and 5 < rec["t"] < 30 and rec["beta"] > 0
    assert 0 <= rec["optimal_win_rate"] - rec["win_rate"] < 0.005
    code, out, _ = _run(capsys, "frontier", "recommend", "--procedure", "won", "--n", "4", "--kl", "0.5")
    assert code == 0
    assert "transform: neg_exp" in out and "\nt: " in out and "\nbeta: " in out


def test_plot_writes_png(capsys, tmp_path):
    png = tmp_path / "frontier.png"
    code, _, _ = _run(capsys, "-q", "frontier", "--procedure", "standard", "--kl", "0.5",
                      "--transform", "identity,log", "--plot", str(png))
    assert code == 0
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.parametrize("argv,match", [
    (["--n", "0"], "n must be a positive integer"),
    (["--kl", "0"], "kl must be a positive number"),
    (["--kl", "-0.5"], "kl must be a positive number"),
    (["--transform", "identity,expo"], "unknown transform 'expo'"),
    (["--transform", "identity", "--t", "3"], "t applies only to exp and neg_exp"),
    (["--transform", "power"], "needs k"),
    (["--kl", "abc"], "'abc' is not a number"),
    (["recommend", "--kl", "0.1,0.2"], "exactly one --kl"),
    (["recommend", "--kl", "0.1", "--transform", "exp"], "does not take --transform"),
    (["--procedure", "best"], "invalid choice"),
    (["--plot", "out.jpg", "--kl", "0.1"], "must be a .png"),
])
def test_bad_input_is_one_line_exit_2(capsys, argv, match):
    code, out, err = _run(capsys, "frontier", *argv)
    assert code == 2
    assert err.count("\n") == 1 and match in err
    assert "Traceback" not in err and out == ""
