"""The experiment the dataset exists for: does training on per-agent credits beat the team reward,
and beat value decomposition? (issue 7)

For each env and tier: collect episodes, annotate them with the reference critics
(``counterfactual``, ``shapley``; and ``llm-mca`` credits where the dataset already has them),
then train on that data, 5 seeds each: ``iql-cql`` on the team reward, on
``credit_counterfactual``, on ``credit_shapley`` (and ``credit_llm_mca``), next to ``vdn-cql`` and
``qmix-cql`` on the team reward, and ``bc`` as the imitation reference. Every run is evaluated
in the real env (decentralised, evaluation seeds disjoint from the data seeds). Prints, per
env and tier, the final normalised score as IQM with a 95% stratified-bootstrap confidence
interval over seeds (rliable) and mean ± std, and writes the rows to ``--out/results.json``.

Resumable: collection, annotation and every finished run are reused on a rerun.

Usage: ``python benchmarks/offline_credit.py [--episodes 64] [--steps 2000] [--seeds 5]
[--envs lbf-8x8-2p-2f ...] [--tiers medium replay] [--out bench-offline]``
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")

import numpy as np
from rliable import library as rly
from rliable import metrics

from llmca_data.annotation.annotate import annotate
from llmca_data.annotation.registry import make_critic
from llmca_data.baselines.experiment import Arm, GridConfig, run_grid, summarize
from llmca_data.collect import CollectConfig, collect
from llmca_data.loaders import OfflineDataset

ENVS = ("lbf-8x8-2p-2f", "lbf-8x8-2p-2f-coop", "spaceworld-10x10-3a")
TIERS = ("medium", "replay")
CRITICS = ("counterfactual", "shapley")


def arms(rewards: tuple[str, ...]) -> tuple[Arm, ...]:
    credit = tuple(Arm("iql-cql", r) for r in rewards)
    return (Arm("iql-cql"), *credit, Arm("vdn-cql"), Arm("qmix-cql"), Arm("bc"))


def iqm_ci(scores: np.ndarray, reps: int) -> tuple[float, float, float]:
    """IQM and its 95% stratified-bootstrap interval over seeds (``scores`` [seeds])."""
    point, interval = rly.get_interval_estimates(
        {"x": scores.reshape(-1, 1)}, lambda x: np.array([metrics.aggregate_iqm(x)]), reps=reps
    )
    return float(point["x"][0]), float(interval["x"][0, 0]), float(interval["x"][1, 0])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--episodes", type=int, default=64, help="episodes per env and tier")
    parser.add_argument("--steps", type=int, default=2000, help="gradient steps per run")
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--eval-episodes", type=int, default=20)
    parser.add_argument("--envs", nargs="+", default=list(ENVS))
    parser.add_argument("--tiers", nargs="+", default=list(TIERS))
    parser.add_argument("--reps", type=int, default=2000, help="bootstrap resamples")
    parser.add_argument("--out", type=Path, default=Path("bench-offline"))
    args = parser.parse_args()
    dataset = args.out / "dataset"
    started = time.perf_counter()
    for env_id in args.envs:
        for tier in args.tiers:
            collect(dataset, CollectConfig(env_id, tier, args.episodes, seed=7, workers=2))
    for critic_id in CRITICS:
        annotate(dataset, make_critic(critic_id), envs=tuple(args.envs), tiers=tuple(args.tiers), workers=2)
    print(f"data ready in {time.perf_counter() - started:.0f} s")

    rows: list[dict[str, object]] = []
    for env_id in args.envs:
        for tier in args.tiers:
            ds = OfflineDataset.open(dataset, env_id, [tier])
            rewards = tuple(f"credit_{c}" for c in (*CRITICS, "llm_mca") if f"credit_{c}" in ds.rewards)
            config = GridConfig(arms=arms(rewards), seeds=tuple(range(args.seeds)), steps=args.steps,
                                eval_episodes=args.eval_episodes)  # fmt: skip
            t0 = time.perf_counter()
            grid = run_grid(dataset, env_id, [tier], args.out / "runs" / env_id / tier, config)
            for row in grid:
                row["tier"] = tier
            rows += grid
            print(f"\n{env_id} {tier} ({args.episodes} episodes, {args.steps} steps, {time.perf_counter() - t0:.0f} s)")
            print("| arm | IQM norm. score [95% CI] | mean ± std | success | cost |")
            print("|---|---:|---:|---:|---:|")
            for s in summarize(grid):
                scores = np.array([r["normalized_score"] for r in grid if r["arm"] == s["arm"]], np.float64)
                iqm, lo, hi = iqm_ci(scores, args.reps)
                print(
                    f"| {s['arm']} | {iqm:.1f} [{lo:.1f}, {hi:.1f}] | {s['normalized_score']:.1f} ± "
                    f"{s['normalized_score_std']:.1f} | {s['success_rate']:.0%} | {s['mean_cost']:.2f} |"
                )
    (args.out / "results.json").write_text(json.dumps(rows, indent=2) + "\n")
    print(f"\n{len(rows)} runs in {time.perf_counter() - started:.0f} s → {args.out / 'results.json'}")


if __name__ == "__main__":
    main()
