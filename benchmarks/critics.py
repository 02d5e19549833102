"""Cost of the reference critics, as multiples of one env step, measured in one run.

For each env and critic: seconds per logged step of ``critic.annotate`` (replaying the
episode, snapshots, every counterfactual branch) ÷ seconds of one raw env step (our
wrapper's ``step`` replaying the same logged actions: RWARE steps cost 2-3× more when agents
move and carry than with random actions, so only the same transitions are a fair peer). Goals
(issue 4): counterfactual ≤ N + 2, exact Shapley ≤ 1.5 · 2^N. Then annotation throughput of
``annotate`` on a small dataset with 1 and 2 worker processes.

Usage: ``python benchmarks/critics.py [--quick]``
"""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")

from llmca_data.annotation.annotate import annotate
from llmca_data.annotation.registry import make_critic
from llmca_data.collect import CollectConfig, collect
from llmca_data.envs import CONTRACT_ENV_IDS, make_env
from llmca_data.rollout import Episode, run_episode, tier_rng
from llmca_data.tiers import tier_policy


def replay_seconds(env_id: str, episodes: list[Episode]) -> float:
    """Seconds per step of replaying the logged actions (reset + step only): one raw env step of
    exactly the transitions the critic re-simulates."""
    env = make_env(env_id)
    start = time.perf_counter()
    for e in episodes:
        env.reset(e.seed)
        for a in e.action:
            env.step(a)
    return (time.perf_counter() - start) / sum(e.length for e in episodes)


def episodes_for(env_id: str, count: int) -> list[Episode]:
    env = make_env(env_id)
    return [run_episode(env, tier_policy(env_id, "medium", tier_rng(s)), s, "medium") for s in range(count)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    scale = 0.3 if args.quick else 1.0
    print(f"{'env':<20} {'N':>2} {'raw step µs':>11}  {'critic':<15} {'µs/step':>8} {'× step':>7}  goal")
    for env_id in CONTRACT_ENV_IDS:
        rware = env_id.startswith("rware")
        episodes = episodes_for(env_id, max(1, int((2 if rware else 12) * scale)))
        n = episodes[0].action.shape[1]
        raw = replay_seconds(env_id, episodes)
        logged = sum(e.length for e in episodes)
        for critic_id, goal in (("uniform", None), ("counterfactual", n + 2), ("shapley", 1.5 * 2**n)):
            critic, env = make_critic(critic_id), make_env(env_id)
            start = time.perf_counter()
            for e in episodes:
                critic.annotate(e, env)
            per_step = (time.perf_counter() - start) / logged
            goal_text = f"<= {goal:g}" if goal is not None else ""
            print(f"{env_id:<20} {n:>2} {raw * 1e6:>11.1f}  {critic_id:<15} {per_step * 1e6:>8.1f} "
                  f"{per_step / raw:>7.2f}  {goal_text}")  # fmt: skip

    tmp = Path(tempfile.mkdtemp(prefix="llmca-bench-critics-"))
    for env_id in ("lbf-10x10-3p-3f", "spaceworld-10x10-3a"):
        collect(tmp / "base", CollectConfig(env_id, "medium", max(8, int(48 * scale)), seed=1))
    print("\nannotate throughput (shapley, lbf-10x10-3p-3f + spaceworld-10x10-3a medium):")
    for workers in (1, 2):
        root = tmp / f"w{workers}"
        shutil.copytree(tmp / "base", root)
        result = annotate(root, make_critic("shapley"), workers=workers)
        print(f"  --workers {workers}: {result.steps / result.seconds:,.0f} steps/s ({result.steps} steps)")
    shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
