"""How good behaviour cloning gets with more data: the BC data curve per env (and tier).

What it measures: for each env and each expert-data size (episodes; the joint transitions they
hold are printed), one ``bc`` run (``--steps`` gradient steps, default network) evaluated on
``--episodes`` evaluation episodes (protocol v2 seeds) both **greedy** and **sampled**, with the
number of frozen episodes (no agent moves or changes what it holds for 10 steps) of each. The
expert data of a size is the first K episodes of one seed sequence, so sizes are nested.

It answers "does BC lack data or information here?": a curve that still rises wants more
data; a flat one at a low score means the observation lacks what the expert used.

Usage::

    python benchmarks/bc_curve.py --env lbf-8x8-2p-2f --sizes 256 1024 2000 --steps 10000
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")

from llmca_data.baselines.evaluate import EvalConfig, evaluate_run
from llmca_data.baselines.train import train
from llmca_data.collect import CollectConfig, collect
from llmca_data.loaders import OfflineDataset


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--env", default="lbf-8x8-2p-2f")
    parser.add_argument("--sizes", type=int, nargs="+", default=[256, 1024, 2000], help="episodes of data")
    parser.add_argument("--tier", default="expert", help="the tier to imitate (expert; medium for filtered-bc)")
    parser.add_argument("--steps", type=int, default=10_000)
    parser.add_argument("--episodes", type=int, default=100, help="evaluation episodes per act mode")
    parser.add_argument("--algo", default="bc", help="bc, or another algorithm of the BC family")
    parser.add_argument("--config", type=json.loads, default={}, help="extra config fields as JSON")
    parser.add_argument("--work", type=Path, default=Path("bench-bc"))
    args = parser.parse_args()
    out = args.work / "results.jsonl"
    print(f"{args.algo} {json.dumps(args.config)}")
    print(f"| env | {args.tier} episodes | transitions | steps | greedy | frozen | sampled | frozen | time |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    for size in sorted(args.sizes):
        dataset = args.work / f"{args.env}-{args.tier}-{size}"
        collect(dataset, CollectConfig(args.env, args.tier, size, seed=7, workers=1))
        transitions = OfflineDataset.open(dataset, args.env, [args.tier]).episodes()["length"].sum()
        t0 = time.perf_counter()
        tag = "".join(f"-{k}={v}" for k, v in args.config.items()).replace(" ", "")
        run = args.work / "runs" / f"{args.algo}-{args.env}-{args.tier}-{size}-{args.steps}{tag}"
        train(args.algo, dataset, args.env, [args.tier], run, steps=args.steps, device="cpu",
              overrides={"eval_episodes": 0, "eval_every": 500, **args.config})  # fmt: skip
        res = {act: evaluate_run(run, EvalConfig(episodes=args.episodes, act=act)) for act in ("greedy", "sample")}
        row = {"env_id": args.env, "algo": args.algo, "tier": args.tier, "episodes": size,
               "transitions": int(transitions),
               "steps": args.steps, "config": args.config, "time_s": round(time.perf_counter() - t0, 1),
               **{f"{act}_score": r["normalized_score"] for act, r in res.items()},
               **{f"{act}_frozen": r["frozen_episodes"] for act, r in res.items()},
               **{f"{act}_success": r["success_rate"] for act, r in res.items()}}  # fmt: skip
        with out.open("a") as f:
            f.write(json.dumps(row) + "\n")
        print(f"| {args.env} | {size} | {transitions} | {args.steps} | {row['greedy_score']:.1f} | "
              f"{row['greedy_frozen']} | {row['sample_score']:.1f} | {row['sample_frozen']} | {row['time_s']:.0f} s |",
              flush=True)  # fmt: skip


if __name__ == "__main__":
    main()
