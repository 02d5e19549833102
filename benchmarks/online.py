"""Online credit assignment: does a critic's per-agent credit make independent DDQN learn faster?

For every env × critic × seed this runs ``train_online`` (resumable: a rerun skips finished
runs and resumes killed ones), then prints one row per (env, critic):

- final normalised score: mean ± std over seeds of the last evaluation;
- episodes to 90: median over seeds of the first evaluation point with normalised score ≥ 90
  (90% of the expert reference), "—" when no seed got there ("3/5" counts the seeds that did);
- cost: LLM tokens (in/out) and USD per run (0 for reference critics);
- critic share: critic seconds ÷ wall seconds (env + learner + critic + eval + io);
- s / 1k episodes: wall seconds per 1000 episodes, and its critic part.

The LLM critics run on a reduced budget (``--llm-episodes``) with the embedded local model
unless ``--base-url``/``--model`` point elsewhere. An arm ``CRITIC+step`` (e.g. ``llm-mca+step``;
``+norm`` is its older name) rescales each step's credits to sum to the team reward, and
``CRITIC+episode`` each episode's credits to sum to its return (``credit_scale``); with the same
seeds it plays the same episodes, so its LLM requests come from the reply cache. An arm
``CRITIC+delayed`` (``team+delayed``, ``env+delayed``, ``llm-mca-shares+delayed``) runs with a delayed
team reward (each episode's return at its last step only); critics whose id ends in ``-delayed``
(``shapley-delayed``, ``counterfactual-delayed``) always do. Curves go to ``OUT/curves.png`` (IQM and
95% bootstrap bands, rliable) and every number to ``OUT/results.json``; ``--final-episodes K``
evaluates each run's final policy on K greedy episodes (protocol v2 seeds) and ``--credit-json FILE``
writes those scores in the credit experiment's format (``llmca leaderboard render --credit-results``).

Usage::

    python benchmarks/online.py                                   # the full experiment (hours on CPU)
    python benchmarks/online.py --episodes 200 --seeds 2 --envs lbf-8x8-2p-2f-coop --critics team shapley
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("OMP_NUM_THREADS", "1")

from llmca_data.annotation.llm.config import LLMConfig
from llmca_data.annotation.registry import CriticOptions
from llmca_data.baselines.curves import aggregate, plot_curves
from llmca_data.baselines.online import CURVE, OnlineConfig, train_online
from llmca_data.baselines.online_io import RUN_DATASET

ENVS = ("lbf-8x8-2p-2f-coop", "lbf-10x10-3p-3f", "spaceworld-10x10-3a")
CRITICS = ("team", "uniform", "counterfactual", "shapley", "llm-mca")
ARM_SCALES = {"": "none", "step": "step", "episode": "episode", "norm": "step"}
"""Arm option (``CRITIC+OPTION``) → ``credit_scale``; ``norm`` is the older name of ``step``."""


def parse_arm(arm: str) -> tuple[str, str, str]:
    """``CRITIC[+OPTION...]`` → (critic, credit_scale option, team_reward)."""
    critic, *options = arm.split("+")
    delayed = "delayed" in options or critic.endswith("-delayed")
    scales = [o for o in options if o != "delayed"]
    if len(scales) > 1 or (scales and scales[0] not in ARM_SCALES):
        raise ValueError(f"unknown arm options in {arm!r}; use +step, +episode and/or +delayed (e.g. llm-mca+episode)")
    return critic, scales[0] if scales else "", "delayed" if delayed else "true"


def run_one(args: argparse.Namespace, env_id: str, arm: str, seed: int) -> Path:
    critic, option, team_reward = parse_arm(arm)  # "llm-mca+episode": credits rescaled to the return
    episodes = args.llm_episodes if critic.startswith("llm-") else args.episodes
    eval_every = min(args.eval_every, episodes)  # a short LLM run still gets curve points
    config = OnlineConfig(
        env_id, critic=critic, seed=seed, credit_scale=ARM_SCALES[option], episodes=episodes, team_reward=team_reward,
        critic_every=args.critic_every, eval_every=eval_every,
        eval_episodes=args.eval_episodes, checkpoint_every=eval_every * 4, device=args.device,
        critic_options=CriticOptions(llm=LLMConfig(
            base_url=args.base_url, model=args.model, episodes_per_prompt=args.episodes_per_prompt,
            team_reward=team_reward if critic.startswith("llm-") else "true",
        )),
    )  # fmt: skip
    run = args.out / env_id / arm / f"seed{seed}"
    started = time.perf_counter()
    train_online(config, run)
    print(f"  {env_id} {arm} seed {seed}: {time.perf_counter() - started:.1f} s → {run}", flush=True)
    return run


def summarise(runs: list[Path]) -> dict[str, Any]:
    curves = [[json.loads(line) for line in (r / CURVE).read_text().splitlines()] for r in runs]
    last = [c[-1] for c in curves]
    finals = [row["eval_score"] for row in last if row["eval_score"] is not None]
    reached = [next((row["episodes"] for row in c if (row["eval_score"] or -1e9) >= 90.0), None) for c in curves]
    hit = [x for x in reached if x is not None]
    wall = sum(row["wall_s"] for row in last)
    episodes = sum(row["episodes"] for row in last)
    critic_s = sum(row["critic_s"] for row in last)
    return {
        "seeds": len(runs),
        "final_score_mean": statistics.fmean(finals) if finals else None,
        "final_score_std": statistics.pstdev(finals) if len(finals) > 1 else 0.0,
        "episodes_to_90": statistics.median(hit) if hit else None,
        "seeds_reaching_90": len(hit),
        "tokens_in": sum(row["tokens_in"] for row in last) / len(last),
        "tokens_out": sum(row["tokens_out"] for row in last) / len(last),
        "cost_usd": sum(row["cost_usd"] for row in last) / len(last),
        "fallback_episodes": sum(row["fallback_episodes"] for row in last),
        "critic_share": critic_s / wall if wall else 0.0,
        "s_per_1k_episodes": 1000 * wall / episodes if episodes else 0.0,
        "critic_s_per_1k_episodes": 1000 * critic_s / episodes if episodes else 0.0,
    }


def final_scores(args: argparse.Namespace, seeds: range) -> list[dict[str, Any]]:
    """Every run's final policy evaluated on ``--final-episodes`` greedy episodes (``eval.json`` in the
    run, reused when it has that many); one row per run in the credit experiment's format."""
    from llmca_data.baselines.evaluate import EvalConfig, evaluate_run

    rows = []
    for env_id in args.envs:
        for arm in args.critics:
            critic, option, team_reward = parse_arm(arm)
            name = critic + (f"+{option}" if option else "")  # the setting column says delayed
            for seed in seeds:
                run = args.out / env_id / arm / f"seed{seed}"
                try:
                    result = json.loads((run / "eval.json").read_text())
                except (OSError, ValueError):
                    result = {}
                if result.get("episodes") != args.final_episodes:
                    result = evaluate_run(run, EvalConfig(episodes=args.final_episodes))
                keep = ("normalized_score", "mean_return", "mean_cost", "frozen_episodes")
                cells = {k: result.get(k) for k in keep}
                rows.append({"env_id": env_id, "tier": "online", "setting": team_reward, "arm": name, "seed": seed,
                             **cells})  # fmt: skip
    return rows


def write_credit_json(args: argparse.Namespace, rows: list[dict[str, Any]]) -> None:
    from llmca_data.leaderboard.credit import credit_markdown, credit_stats, write_credit_results

    config = {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()}
    body = write_credit_results(args.credit_json, "online", {"team": "team", "env": "env"}, rows, config=config)
    print(credit_markdown(credit_stats(body), body))


def agreement(runs: list[Path], critic: str, references: tuple[str, ...]) -> dict[str, dict[str, Any]]:
    """How ``critic``'s credits in the runs' datasets agree with reference critics' on the same episodes.

    Each run's dataset is copied, annotated by the references (and ``uniform``, the floor), and all
    runs' tallies are pooled before scoring (``combine_tallies``), so rare rewarded steps add up.
    """
    from llmca_data.annotation.annotate import annotate
    from llmca_data.annotation.evaluate import credit_tallies
    from llmca_data.annotation.metrics import CreditTally, combine_tallies
    from llmca_data.annotation.registry import make_critic

    candidates = (critic, "uniform", *references)
    pairs = [(c, ref) for ref in references for c in candidates if c != ref]
    pooled: dict[tuple[str, str], list[CreditTally]] = {pair: [] for pair in pairs}
    with tempfile.TemporaryDirectory() as scratch:
        for k, run in enumerate(runs):
            root = Path(scratch) / f"run{k}"
            shutil.copytree(run / RUN_DATASET, root)
            for other in ("uniform", *references):
                annotate(root, make_critic(other))
            for c, ref in pairs:
                pooled[c, ref].extend(credit_tallies(root, c, ref).values())
    return {f"{c} vs {ref}": combine_tallies(tallies).scores().to_dict() for (c, ref), tallies in pooled.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--envs", nargs="+", default=list(ENVS))
    parser.add_argument("--critics", nargs="+", default=list(CRITICS))
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument(
        "--first-seed", type=int, default=0,
        help="seeds FIRST..FIRST+SEEDS-1 (split one grid over processes sharing --out; a final run over all "
        "seeds, every run finished, only summarises)",
    )  # fmt: skip
    parser.add_argument("--episodes", type=int, default=2000, help="episodes per run (reference critics, team)")
    parser.add_argument("--llm-episodes", type=int, default=40, help="episodes per LLM-critic run (slow locally)")
    parser.add_argument("--critic-every", type=int, default=10)
    parser.add_argument("--eval-every", type=int, default=50)
    parser.add_argument("--eval-episodes", type=int, default=10)
    parser.add_argument("--episodes-per-prompt", type=int, default=1)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--base-url", default="")
    parser.add_argument("--model", default="")
    parser.add_argument("--out", type=Path, default=Path("benchmark-online"))
    parser.add_argument("--final-episodes", type=int, default=0, help="evaluate each final policy on K episodes")
    parser.add_argument("--credit-json", type=Path, default=None, help="write final scores in the credit format")
    parser.add_argument(
        "--agreement", nargs="*", default=None, metavar="REFERENCE",
        help="also score the LLM arms' credits against these reference critics (default: shapley counterfactual)",
    )  # fmt: skip
    args = parser.parse_args()
    if args.llm_episodes % args.critic_every or args.episodes % args.critic_every:
        parser.error("--episodes and --llm-episodes must be multiples of --critic-every")
    for arm in args.critics:  # checked before any run starts, not hours into the grid
        try:
            parse_arm(arm)
        except ValueError as exc:
            parser.error(str(exc))
    results: dict[str, dict[str, Any]] = {}
    seeds = range(args.first_seed, args.first_seed + args.seeds)
    all_runs: list[Path] = []
    for env_id in args.envs:
        for critic in args.critics:
            runs = [run_one(args, env_id, critic, seed) for seed in seeds]
            all_runs += runs
            results[f"{env_id} {critic}"] = summarise(runs)
    print(f"\n{'env':<22} {'critic':<15} {'final score':>14} {'ep. to 90':>10} {'tokens in/out':>15} "
          f"{'USD':>7} {'critic %':>8} {'s/1k ep':>9} {'critic s/1k':>11} {'fallbacks':>9}")  # fmt: skip
    for key, r in results.items():
        env_id, critic = key.split(" ")
        final = "—" if r["final_score_mean"] is None else f"{r['final_score_mean']:.1f} ± {r['final_score_std']:.1f}"
        to90 = (
            "—" if r["episodes_to_90"] is None else f"{r['episodes_to_90']:.0f} ({r['seeds_reaching_90']}/{r['seeds']})"
        )
        tokens = f"{r['tokens_in']:.0f}/{r['tokens_out']:.0f}"
        print(f"{env_id:<22} {critic:<15} {final:>14} {to90:>10} {tokens:>15} {r['cost_usd']:>7.3f} "
              f"{100 * r['critic_share']:>7.0f}% {r['s_per_1k_episodes']:>9.0f} {r['critic_s_per_1k_episodes']:>11.0f} "
              f"{r['fallback_episodes']:>9}")  # fmt: skip
    agreements: dict[str, dict[str, Any]] = {}
    if args.agreement is not None:
        references = tuple(args.agreement) or ("shapley", "counterfactual")
        print(f"\n{'env':<22} {'arm':<14} {'credits vs':<28} {'rewarded':>8} {'sign':>6} {'top':>6} "
              f"{'spearman':>8} {'MAE':>7} {'ep. total r':>11}")  # fmt: skip
        for env_id in args.envs:
            # the +step / +episode arms have the same credits as their plain arm
            for arm in (a for a in args.critics if a.startswith("llm-") and "+" not in a):
                runs = [args.out / env_id / arm / f"seed{seed}" for seed in seeds]
                for pair, sc in agreement(runs, arm, references).items():
                    agreements[f"{env_id} {arm} {pair}"] = sc
                    cells = [sc[k] for k in ("sign_agreement", "top_agent_accuracy", "spearman", "mae_scaled",
                                             "episode_total_pearson")]  # fmt: skip
                    shown = ["—" if v is None else f"{v:.3f}" for v in cells]
                    print(f"{env_id:<22} {arm:<14} {pair:<28} {sc['rewarded_steps']:>8} {shown[0]:>6} {shown[1]:>6} "
                          f"{shown[2]:>8} {shown[3]:>7} {shown[4]:>11}")  # fmt: skip
    if args.final_episodes:
        final = final_scores(args, seeds)
        if args.credit_json is not None:
            write_credit_json(args, final)
    args.out.mkdir(parents=True, exist_ok=True)
    settings = {k: str(v) for k, v in vars(args).items()}
    body = {"args": settings, "results": results, "agreement": agreements}
    (args.out / "results.json").write_text(json.dumps(body, indent=2))
    plot = plot_curves(aggregate(all_runs, "eval_score", reps=2000), args.out / "curves.png")
    print(f"\ncurves → {plot}; numbers → {args.out / 'results.json'}")


if __name__ == "__main__":
    main()
