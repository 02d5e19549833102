"""Recorded hyperparameter sweep of the offline Q-learners, scored on validation seeds.

What it measures: for each setting of CQL weight ``cql_alpha``, discount ``gamma``, target
update (``tau``, ``target_period``) and ``reward_scale``, one ``iql-cql`` (or ``vdn-cql`` /
``qmix-cql``) run on a fixed dataset, then the greedy policy's normalised score over
``--val-episodes`` rollouts on **validation seeds** ``eval_seed(PERIODIC_EVAL_OFFSET + i)``,
disjoint from the data seeds and from the evaluation seeds ``eval_seed(0..)`` that published
results use. Choosing defaults this way is online tuning (the real env is consulted); every
table that reports results says so.

Each run also records whether the divergence guard fired (``diverged``), the final mean Q on
dataset actions and the guard's bound. Rows go to ``--out`` (JSON lines) as they finish; a
rerun skips settings already there, so the sweep resumes where it stopped.

Usage::

    python benchmarks/sweep_q.py --env lbf-8x8-2p-2f --tier medium --episodes 600 --steps 10000
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")

from llmca_data.baselines.evaluate import EvalConfig, evaluate_run
from llmca_data.baselines.train import train
from llmca_data.baselines.training import PERIODIC_EVAL_OFFSET
from llmca_data.collect import CollectConfig, collect

GRID = {
    "cql_alpha": (0.0, 0.1, 0.3, 1.0),
    "gamma": (0.9, 0.95, 0.99),
    "target": ((0.005, 1), (1.0, 200)),
    "reward_scale": (1.0,),
}
"""The settings crossed (``target`` is (tau, target_period))."""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--algo", default="iql-cql", choices=("iql-cql", "vdn-cql", "qmix-cql"))
    parser.add_argument("--env", default="lbf-8x8-2p-2f")
    parser.add_argument("--tier", default="medium")
    parser.add_argument("--episodes", type=int, default=600, help="episodes of data (data seed 7)")
    parser.add_argument("--steps", type=int, default=10_000, help="gradient steps per run")
    parser.add_argument("--seed", type=int, default=0, help="training seed")
    parser.add_argument("--val-episodes", type=int, default=100, help="validation rollouts per run")
    parser.add_argument("--alphas", type=float, nargs="+", default=GRID["cql_alpha"])
    parser.add_argument("--gammas", type=float, nargs="+", default=GRID["gamma"])
    parser.add_argument("--scales", type=float, nargs="+", default=GRID["reward_scale"])
    parser.add_argument("--targets", nargs="+", default=[f"{t}:{p}" for t, p in GRID["target"]],
                        help="target updates as TAU:PERIOD (1.0:200 copies every 200 steps)")  # fmt: skip
    parser.add_argument("--reward", default="team", help="reward source of iql-cql (team, env, credit_<critic>)")
    parser.add_argument("--config", type=json.loads, default={}, help="other config fields as a JSON object")
    parser.add_argument("--work", type=Path, default=Path("bench-sweep"), help="dataset and run directories")
    parser.add_argument("--out", type=Path, default=None, help="JSON lines of results (default: WORK/sweep.jsonl)")
    args = parser.parse_args()
    out = args.out or args.work / "sweep.jsonl"
    dataset = args.work / "dataset"
    collect(dataset, CollectConfig(args.env, args.tier, args.episodes, seed=7, workers=1))
    done = set()
    if out.exists():
        rows = [json.loads(line) for line in out.read_text().splitlines()]
        done = {json.dumps({**r["settings"], "seed": r.get("seed", 0)}, sort_keys=True) for r in rows}
    val = EvalConfig(episodes=args.val_episodes, seed_offset=PERIODIC_EVAL_OFFSET)
    targets = [(float(t), int(p)) for t, p in (x.split(":") for x in args.targets)]
    for alpha, gamma, (tau, period), scale in itertools.product(args.alphas, args.gammas, targets, args.scales):
        settings = {"cql_alpha": alpha, "gamma": gamma, "tau": tau, "target_period": period, "reward_scale": scale}
        if args.reward != "team":
            settings["reward"] = args.reward
        settings.update(args.config)
        key = json.dumps({**settings, "seed": args.seed}, sort_keys=True)
        if key in done:
            continue
        name = "_".join(f"{k}={v}" for k, v in settings.items()).replace(" ", "")
        run = args.work / "runs" / args.algo / name / f"seed-{args.seed}"
        t0 = time.perf_counter()
        train(args.algo, dataset, args.env, [args.tier], run, steps=args.steps, seed=args.seed, device="cpu",
              overrides={**settings, "eval_episodes": 0, "eval_every": 500})  # fmt: skip
        result = evaluate_run(run, val)
        body = json.loads((run / "config.json").read_text())
        last = json.loads((run / "metrics.jsonl").read_text().splitlines()[-1])
        row = {
            "algo": args.algo, "env_id": args.env, "tier": args.tier, "episodes": args.episodes, "seed": args.seed,
            "steps": args.steps, "settings": settings, "val_score": result["normalized_score"],
            "val_return": result["mean_return"], "diverged": result.get("diverged", last.get("diverged")),
            "q_mean": last.get("q_tot_mean", last.get("q_mean")), "q_bound": body["q_bound"],
            "frozen_episodes": result.get("frozen_episodes"), "time_s": round(time.perf_counter() - t0, 1),
        }  # fmt: skip
        with out.open("a") as f:
            f.write(json.dumps(row) + "\n")
        print(json.dumps(row), flush=True)
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    rows.sort(key=lambda r: -(r["val_score"] or -1e9))
    print("\n| reward | cql_alpha | gamma | tau | target_period | scale | seed | val score | frozen | diverged "
          "| mean Q | bound |\n|---|---:|---:|---:|---:|---:|---:|---:|---:|---|---:|---:|")  # fmt: skip
    for r in rows:
        s = r["settings"]
        print(f"| {s.get('reward', 'team')} | {s['cql_alpha']} | {s['gamma']} | {s['tau']} | {s['target_period']} | "
              f"{s['reward_scale']} | {r.get('seed', 0)} | {r['val_score']:.1f} | {r['frozen_episodes']} | "
              f"{r['diverged']} | {r['q_mean']:.3f} | {r['q_bound']:.3f} |")  # fmt: skip


if __name__ == "__main__":
    main()
