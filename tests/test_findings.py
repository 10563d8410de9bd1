"""Findings: what a report states (intervals that exclude 0) and whether a fresh run reproduces it.

The slow test is the promise README makes about paper/mini: on this machine, with a zoo freshly built
here (whatever its CPU), every finding stated in ``paper/mini/findings.csv`` holds.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from study.analysis.findings import check_findings, stated_findings

ROOT = Path(__file__).resolve().parents[1]


def _summary(rows: list[tuple[str, int, int, float, float, float]]) -> pd.DataFrame:
    """Summary rows (method, k, n_subsets, gain mean, gain low, gain high); relative gains mirror the gains."""
    out = []
    for method, k, n, mean, lo, hi in rows:
        out.append({"base": "zoo", "method": method, "params": "{}", "k": k, "n_subsets": n,
                    "gain_mean": mean, "gain_ci_low": lo, "gain_ci_high": hi,
                    "rel_gain_best_single_mean": mean, "rel_gain_best_single_ci_low": lo,
                    "rel_gain_best_single_ci_high": hi})
    return pd.DataFrame(out)


def test_a_finding_needs_an_interval_that_excludes_zero_on_two_subsets() -> None:
    summary = _summary([("a", 2, 2, 0.05, 0.01, 0.09),    # above
                        ("b", 2, 2, -0.05, -0.09, -0.01),  # below
                        ("c", 2, 2, 0.01, -0.02, 0.04),    # interval spans 0
                        ("d", 10, 1, 0.30, 0.30, 0.30)])   # one subset: a point, not an interval
    stated = stated_findings(summary)
    assert sorted(zip(stated.method, stated.direction)) == [("a", "above"), ("a", "above"),
                                                            ("b", "below"), ("b", "below")]
    assert set(stated.measure) == {"gain", "rel_gain_best_single"}


def test_check_findings_flags_a_flipped_sign_and_a_missing_row() -> None:
    stated = stated_findings(_summary([("a", 2, 2, 0.05, 0.01, 0.09), ("b", 2, 2, -0.05, -0.09, -0.01),
                                       ("e", 4, 2, 0.05, 0.01, 0.09)]))
    fresh = _summary([("a", 2, 2, 0.02, -0.01, 0.05), ("b", 2, 2, 0.01, -0.01, 0.03)])
    checked = check_findings(stated, fresh).set_index(["method", "measure"])
    assert checked.loc[("a", "gain"), "held"]
    assert not checked.loc[("b", "gain"), "held"]
    assert not checked.loc[("e", "gain"), "held"] and pd.isna(checked.loc[("e", "gain"), "fresh_mean"])


@pytest.mark.slow
def test_committed_findings_hold_on_a_freshly_built_zoo(tmp_path: Path) -> None:
    """Runs README line 1's study (sweeps/mini.yaml) on the zoo the test session built here, into a fresh
    store, and checks every finding paper/mini states."""
    stated = pd.read_csv(ROOT / "paper" / "mini" / "findings.csv")
    assert not stated.empty, "paper/mini states no finding: regenerate it with README line 1"
    env = {**os.environ, "MPLCONFIGDIR": str(tmp_path / "mpl")}
    cli = [sys.executable, "-m", "study"]
    subprocess.run([*cli, "zoo", "build"], cwd=ROOT, env=env, check=True)
    store, out = tmp_path / "store", tmp_path / "report"
    subprocess.run([*cli, "run", "sweeps/mini.yaml", "--store", str(store)], cwd=ROOT, env=env, check=True)
    subprocess.run([*cli, "report", "sweeps/mini.yaml", "--store", str(store), "--out", str(out)], cwd=ROOT,
                   env=env, check=True, stdout=subprocess.DEVNULL)
    checked = check_findings(stated, pd.read_csv(out / "summary.csv"))
    failed = checked[~checked.held]
    assert failed.empty, "findings that did not hold on this machine:\n" + failed.to_string()
