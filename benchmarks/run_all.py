"""The whole suite, one benchmark after another, each in a fresh process; then one summary table.

    python -m benchmarks.run_all --quick      # about 10 minutes on 2 cores
    python -m benchmarks.run_all              # the full sizes (well over an hour: the headline alone is 3 x 15 min)

Each benchmark prints its JSON and writes it under benchmarks/results/; this prints every figure
beside its target, and writes results/summary.json.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from benchmarks.common import DEFAULT_DATA, RESULTS, emit

SUITE = ("overhead", "time_to_accuracy", "pruning", "memory", "storage_scale")
HERE = Path(__file__).parent


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--quick", action="store_true", help="small sizes: the whole suite in about 10 minutes")
    p.add_argument("--data", default=DEFAULT_DATA, help="MNIST IDX directory or .npz (default: %(default)s)")
    p.add_argument("--out", type=Path, default=RESULTS)
    p.add_argument("--only", default=",".join(SUITE), help="comma-separated subset (default: all)")
    args = p.parse_args()
    names = [n.strip() for n in args.only.split(",") if n.strip()]
    if (HERE / "workers.py").exists() and "workers" not in names and args.only == ",".join(SUITE):
        names.append("workers")  # item 7, owned by the multi-worker work
    results: dict[str, Any] = {}
    timings: dict[str, float] = {}
    for name in names:
        command = [sys.executable, "-m", f"benchmarks.{name}"] + _flags(name, data=args.data, out=args.out, quick=args.quick)
        print(f"== {name}", file=sys.stderr, flush=True)
        started = time.perf_counter()
        completed = subprocess.run(command, cwd=HERE.parent, stdout=subprocess.PIPE, text=True)
        timings[name] = round(time.perf_counter() - started, 1)
        try:
            results[name] = json.loads(completed.stdout[completed.stdout.index("{") :])
        except ValueError:
            results[name] = {"error": f"exit code {completed.returncode}, no JSON on stdout"}
        if completed.returncode:
            results[name].setdefault("error", f"exit code {completed.returncode}")
        elif not _flags(name, data=args.data, out=args.out, quick=args.quick):
            args.out.mkdir(parents=True, exist_ok=True)  # it printed its JSON without keeping a copy
            (args.out / f"{name}.json").write_text(json.dumps(results[name], indent=2) + "\n")
    rows = figures(results)
    print(table(rows), file=sys.stderr)
    emit("summary", {"quick": args.quick, "seconds": timings, "figures": rows}, args.out)


def _flags(name: str, *, data: str, out: Path, quick: bool) -> list[str]:
    """The suite's flags for a benchmark built on common.parser; others (workers.py) run with their own defaults."""
    source = (HERE / f"{name}.py").read_text()
    if not ("from benchmarks.common import" in source and "parser(" in source):
        return []
    return ["--data", data, "--out", str(out)] + (["--quick"] if quick else [])


def figures(results: dict[str, Any]) -> list[dict[str, Any]]:
    """One row per figure of the issue: what was measured, its target, and whether it was met."""
    rows: list[dict[str, Any]] = []

    def add(item: str, figure: str, value: Any, target: str, met: Callable[[Any], bool] | None) -> None:
        ok = None if value is None or met is None else bool(met(value))
        rows.append({"item": item, "figure": figure, "value": value, "target": target, "met": ok})

    o = results.get("overhead", {})
    if "trial_overhead" in o:
        add("1", "tuner trial / plain model.fit, s per epoch", round(o["trial_overhead"]["ratio_wall"], 3), "<= 1.05", lambda v: v <= 1.05)
        add("2", "wide model FLOP rate / numpy matmul rate", round(o["wide_model"]["fraction_of_matmul"], 3), ">= 0.5", lambda v: v >= 0.5)
        add(
            "2",
            "small model epoch, tuner settings / Keras defaults",
            round(o["small_model"]["ratio_steady_epoch_wall"], 3),
            "<= 0.6",
            lambda v: v <= 0.6,
        )
    t = results.get("time_to_accuracy", {})
    if "arms" in t:
        for arm, r in t["arms"].items():
            add(
                "3",
                f"{arm}: median s to an epoch at {t['target']:.1%} (limit {t['limit_s']:.0f} s)",
                r["median_seconds_to_target"],
                "-",
                None,
            )
            add("3", f"{arm}: best validation accuracy within the limit", r["median_best_accuracy"], "-", None)
        add("3", "tuner time / faster rival's time", t.get("tuner_over_fastest_rival"), "<= 0.5", lambda v: v <= 0.5)
        add("3", "tuner's best accuracy - the better rival's, points", t.get("tuner_minus_best_rival_points"), ">= 0.2", lambda v: v >= 0.2)
    pr = results.get("pruning", {})
    if "epoch_saving_vs_unpruned" in pr:
        add("4", "epochs saved by pruning", pr["epoch_saving_vs_unpruned"], ">= 0.5", lambda v: v >= 0.5)
        add("4", "best accuracy gap, points", pr["best_accuracy_gap_points"], "<= 0.1", lambda v: v <= 0.1)
    m = results.get("memory", {})
    if "growth_mb_after_trial_10" in m:
        add("5", f"RSS growth after trial 10 over {m['trials']} trials, MB", m["growth_mb_after_trial_10"], "< 150", lambda v: v < 150)
    _storage_scale_figures(results.get("storage_scale", {}), add)
    if "workers" in results and "error" not in results["workers"]:
        add("7", "parallel workers (benchmarks/workers.py)", "see results/workers.json", "-", None)
    for name, r in results.items():
        if "error" in r:
            add("-", f"{name} failed", r["error"], "-", None)
    return rows


def _storage_scale_figures(s: dict[str, Any], add: Callable[[str, str, Any, str, Callable[[Any], bool] | None], None]) -> None:
    for backend, sizes in s.get("backends", {}).items():
        if "skipped" in sizes:
            add("6", f"{backend}: skipped", sizes["skipped"], "-", None)
            continue
        for size, row in sizes.items():
            add(
                "6",
                f"{backend}: bookkeeping ms per trial at {size} trials",
                row["ms_per_trial_median"],
                "< 50 at 10000",
                (lambda v: v < 50) if size == "10000" else None,
            )


def table(rows: list[dict[str, Any]]) -> str:
    lines = ["| item | figure | value | target | met |", "| --- | --- | --- | --- | --- |"]
    for row in rows:
        met = {True: "yes", False: "no", None: ""}[row["met"]]
        lines.append(f"| {row['item']} | {row['figure']} | {row['value']} | {row['target']} | {met} |")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
