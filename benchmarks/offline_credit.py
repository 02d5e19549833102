"""The credit experiment, offline (issue 20): does training on per-agent credit beat the team
reward, the env's own per-agent reward and value decomposition, with a true and a delayed team reward?

Per env (one tier, ``medium`` by default): collect episodes (seed 7), annotate them with the
reference critics (``shapley``, ``counterfactual``, ``counterfactual-h5`` and the delayed
setting's ``shapley-delayed`` and ``counterfactual-delayed``) and, on ``--llm-envs``, the LLM
shares critic in both settings (embedded model unless ``--base-url``); then train every arm × seed
and evaluate it (protocol v2: ``--eval-episodes`` greedy episodes; BC also sampled).

Arms of setting ``true`` (the learner sees every step's team reward): ``iql-cql`` on the team
reward, on ``env`` (the env's own per-agent reward: the structural oracle), on ``credit_shapley``,
``credit_counterfactual``, ``credit_counterfactual_h5`` and ``credit_llm_mca_shares``; ``vdn-cql``
and ``qmix-cql`` on the team reward; ``bc`` (greedy and sampled). Setting ``delayed`` (each
episode's return at its last step only; ``team_reward="delayed"``): ``iql-cql`` on the delayed team
reward, on ``env`` (each agent's episode total at the end), on ``credit_shapley_delayed``,
``credit_counterfactual_delayed`` and ``credit_llm_mca_shares_delayed``; ``vdn-cql`` and
``qmix-cql`` on the delayed team reward; BC ignores rewards, so its runs are listed under both.
Credits whose units are multi-step returns (``h5``, the delayed critics) are scaled per episode to
the episode's return (``credit_scale="episode"``, marked ``~episode``); one-step credits as stored.

Budget: seed 0 of every env runs first, as the pilot; its measured seconds per run give the
projected wall clock of the other seeds, printed before they start, and ``--budget-hours`` cuts
the seeds to what fits. Resumable: collection, annotation and finished runs are reused, and
``OUT/results.json`` (``llmca_data.leaderboard.credit``'s format) is rewritten after every env ×
seed, so a killed run loses only the runs in flight. The tables are printed at the end and by
``llmca leaderboard render --credit-results OUT/results.json --out DIR``.

Usage: ``python benchmarks/offline_credit.py [--envs lbf-8x8-2p-2f spaceworld-10x10-3a]
[--episodes 300 200] [--steps 5000] [--seeds 5] [--llm-envs lbf-8x8-2p-2f] [--out bench-credit]``
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("OMP_NUM_THREADS", "1")


from llmca_data.annotation.annotate import annotate
from llmca_data.annotation.llm.config import LLMConfig
from llmca_data.annotation.registry import CriticOptions, make_critic
from llmca_data.baselines.evaluate import PROTOCOL_VERSION
from llmca_data.baselines.experiment import Arm, GridConfig, run_grid
from llmca_data.collect import CollectConfig, collect
from llmca_data.leaderboard.credit import credit_markdown, credit_stats, write_credit_results
from llmca_data.leaderboard.statistics import StatsConfig
from llmca_data.loaders import OfflineDataset

ENVS = ("lbf-8x8-2p-2f", "spaceworld-10x10-3a")
EPISODES = (300, 200)
REFERENCE = ("shapley", "counterfactual", "counterfactual-h5", "shapley-delayed", "counterfactual-delayed")
LLM = "llm-mca-shares"
EPISODE_SCALED = ("credit_counterfactual_h5", "credit_shapley_delayed", "credit_counterfactual_delayed",
                  "credit_llm_mca_shares_delayed")  # fmt: skip
DELAYED = (("team_reward", "delayed"),)
BASELINES = {"team": "iql-cql", "env": "iql-cql+env"}


def arms(rewards: tuple[str, ...], setting: str) -> tuple[Arm, ...]:
    """The arms of one setting on a dataset whose reward sources are ``rewards``."""
    delayed = setting == "delayed"
    extra = DELAYED if delayed else ()
    credits = [r for r in rewards if r.startswith("credit_") and r.endswith("_delayed") == delayed]
    wanted = ("credit_shapley", "credit_counterfactual", "credit_counterfactual_h5", "credit_llm_mca_shares")
    credits = [r for r in credits if r.removesuffix("_delayed") in wanted]
    out = [Arm("iql-cql", config=extra), Arm("iql-cql", "env", config=extra)]
    for r in credits:
        scale = (("credit_scale", "episode"),) if r in EPISODE_SCALED else ()
        out.append(Arm("iql-cql", r, config=extra + scale))
    out += [Arm("vdn-cql", config=extra), Arm("qmix-cql", config=extra)]
    if not delayed:
        out += [Arm("bc"), Arm("bc", act="sample")]
    return tuple(out)


def label(arm: Arm) -> str:
    return arm.name + ("~episode" if ("credit_scale", "episode") in arm.config else "")


def prepare(args: argparse.Namespace, dataset: Path) -> None:
    """Collect and annotate every env (each stage reuses what is already there)."""
    for env_id, episodes in zip(args.envs, args.episodes, strict=True):
        collect(dataset, CollectConfig(env_id, args.tier, episodes, seed=7, workers=2))
    for critic_id in REFERENCE:
        t0 = time.perf_counter()
        result = annotate(dataset, make_critic(critic_id), envs=tuple(args.envs), tiers=(args.tier,), workers=2)
        print(f"annotate {critic_id}: {result.episodes} new episodes in {time.perf_counter() - t0:.0f} s", flush=True)
    for team_reward in ("true", "delayed"):
        if not args.llm_envs:
            break
        llm = LLMConfig(base_url=args.base_url, model=args.model, team_reward=team_reward)
        critic = make_critic(LLM, CriticOptions(llm=llm))
        try:
            t0 = time.perf_counter()
            result = annotate(dataset, critic, envs=tuple(args.llm_envs), tiers=(args.tier,))
            print(f"annotate {critic.critic_id}: {result.episodes} new episodes, {result.failed} failed, "
                  f"{result.tokens_in:,} / {result.tokens_out:,} tokens in {time.perf_counter() - t0:.0f} s",
                  flush=True)  # fmt: skip
        finally:
            getattr(critic, "close", lambda: None)()


def run_seed(args: argparse.Namespace, dataset: Path, env_id: str, seed: int) -> tuple[list[dict[str, Any]], int]:
    """Every arm of both settings on ``env_id`` for one seed; the rows and the number of runs trained."""
    rows: list[dict[str, Any]] = []
    rewards = OfflineDataset.open(dataset, env_id, [args.tier]).rewards
    for setting in ("true", "delayed"):
        grid_arms = arms(rewards, setting)
        config = GridConfig(arms=grid_arms, seeds=(seed,), steps=args.steps, eval_episodes=args.eval_episodes,
                            workers=args.workers)  # fmt: skip
        out = args.out / "runs" / env_id / args.tier / setting
        for arm, row in zip(grid_arms, run_grid(dataset, env_id, [args.tier], out, config), strict=True):
            rows.append({**row, "tier": args.tier, "setting": setting, "arm": label(arm)})
    bc = [{**r, "setting": "delayed"} for r in rows if r["algo"] == "bc"]  # BC ignores rewards: same runs
    return rows + bc, sum(1 for r in rows if r["algo"] != "bc" or r["act"] == "greedy")


def write(args: argparse.Namespace, rows: list[dict[str, Any]], budget: dict[str, Any]) -> dict[str, Any]:
    config = {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()}
    return write_credit_results(args.out / "results.json", "offline", BASELINES, rows, protocol=PROTOCOL_VERSION,
                                budget=budget, config=config)  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--envs", nargs="+", default=list(ENVS))
    parser.add_argument("--episodes", nargs="+", type=int, default=list(EPISODES), help="per env, in --envs order")
    parser.add_argument("--tier", default="medium")
    parser.add_argument("--steps", type=int, default=5000, help="gradient steps per run")
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--eval-episodes", type=int, default=100)
    parser.add_argument("--workers", type=int, default=2, help="runs trained at once")
    parser.add_argument("--budget-hours", type=float, default=0.0, help="cut the seeds to fit (0: no limit)")
    parser.add_argument("--llm-envs", nargs="*", default=["lbf-8x8-2p-2f"], help="envs the LLM critic annotates")
    parser.add_argument("--base-url", default="", help="LLM endpoint (default: the embedded local model)")
    parser.add_argument("--model", default="", help="LLM model name at --base-url")
    parser.add_argument("--reps", type=int, default=2000, help="bootstrap resamples")
    parser.add_argument("--out", type=Path, default=Path("bench-credit"))
    args = parser.parse_args()
    if len(args.episodes) != len(args.envs):
        parser.error(f"--episodes needs one count per env ({len(args.envs)}), got {len(args.episodes)}")
    dataset = args.out / "dataset"
    started = time.perf_counter()
    prepare(args, dataset)
    budget: dict[str, Any] = {"data_s": round(time.perf_counter() - started), "workers": args.workers}
    print(f"data ready in {budget['data_s']} s", flush=True)

    rows: list[dict[str, Any]] = []
    seeds = args.seeds
    for seed in range(args.seeds):
        if seed >= seeds:
            break
        t0 = time.perf_counter()
        trained = 0
        for env_id in args.envs:
            new, n = run_seed(args, dataset, env_id, seed)
            rows += new
            trained += n
            write(args, rows, budget)
        if seed == 0:  # the pilot: cost per run, projected budget, seeds that fit
            per_seed = time.perf_counter() - t0
            budget.update(pilot_s=round(per_seed), runs_per_seed=trained,
                          s_per_run=round(per_seed * args.workers / max(trained, 1), 1))  # fmt: skip
            if args.budget_hours > 0:
                seeds = max(1, min(args.seeds, int(args.budget_hours * 3600 // max(per_seed, 1))))
            budget.update(seeds=seeds, projected_h=round(per_seed * seeds / 3600, 2))
            print(f"pilot: {trained} runs in {per_seed:.0f} s ({budget['s_per_run']} s per run on one core); "
                  f"{seeds} seeds → about {budget['projected_h']} h of wall clock", flush=True)  # fmt: skip
    budget["wall_s"] = round(time.perf_counter() - started)
    results = write(args, rows, budget)
    stats = StatsConfig(reps=args.reps)
    print(credit_markdown(credit_stats(results, stats), results, stats))
    print(f"{len(rows)} rows in {budget['wall_s']} s → {args.out / 'results.json'}")


if __name__ == "__main__":
    main()
