"""``llmca train`` and ``llmca evaluate``: offline MARL baselines on a built dataset.

Input: a dataset directory or Hub repo id, an env id, an algorithm id and a reward source
(train); a run directory (evaluate). Output: a run directory (``config.json``,
``model.safetensors``, ``metrics.jsonl``) and its ``eval.json``. Registered by the CLI app as
``app.command("train")(train_cmd)`` and ``app.command("evaluate")(evaluate_cmd)``; imports are
lazy so ``llmca --help`` stays fast.
"""

from __future__ import annotations

from pathlib import Path

import typer

from llmca_data.cli.output import console
from llmca_data.cli.progress import progress_bar


def train_cmd(
    algo: str = typer.Argument(
        ..., help="bc | filtered-bc | iql-cql | vdn-cql | qmix-cql | d3rlpy-bc | d3rlpy-cql | d3rlpy-bcq"
    ),
    dataset: str = typer.Option(..., "--dataset", help="Dataset directory or Hub repo id."),
    env: str = typer.Option(..., "--env", help="Env id, e.g. lbf-8x8-2p-2f."),
    tier: list[str] = typer.Option([], "--tier", help="Tier(s) to train on (repeatable; default all)."),
    reward: str = typer.Option(
        "team", "--reward", help="team | env | credit_CRITIC: iql-cql, d3rlpy-cql, d3rlpy-bcq (the others: team only)."
    ),
    credit_scale: str = typer.Option(
        "none",
        "--credit-scale",
        help="none | step | episode: put the --reward credits on the team reward's scale (iql-cql, d3rlpy-cql, "
        "d3rlpy-bcq). none: as stored; step: each step's agents sum to the team reward (unrewarded steps get 0); "
        "episode: each episode's credits sum to its return, one factor per episode (credit for steps that lead "
        "to reward survives). Saved in config.json.",
    ),
    steps: int = typer.Option(None, "--steps", min=1, help="Gradient steps (default: the algorithm's config)."),
    seed: int = typer.Option(0, "--seed", min=0, help="Training seed."),
    device: str = typer.Option("auto", "--device", help="auto (CUDA when present) | cpu | cuda."),
    out: Path = typer.Option(..., "--out", help="Run directory (config.json, model.safetensors, metrics.jsonl)."),
    task_input: str = typer.Option(
        None, "--task-input", help="iql-cql: append this critic's task (llm-taca) to each agent's input, dropout→1."
    ),
    config: Path = typer.Option(
        None, "--config", help="JSON file of config fields (e.g. lr, hidden, cql_alpha); an unknown key is an error."
    ),
) -> None:
    """Train an offline MARL baseline; credits as rewards turn LLM-MCA's training signal on.

    The bar shows the loss and the last periodic evaluation (return and normalised score);
    metrics.jsonl logs the training and held-out validation losses.
    """
    from llmca_data.baselines.train import train
    from llmca_data.config import load_settings

    with progress_bar(f"train {algo}", "steps") as update:
        run_dir = train(
            algo, dataset, env, tier or None, out, reward=reward, steps=steps, seed=seed, device=device,
            task_input=task_input, credit_scale=credit_scale, overrides=load_settings(config), progress=update,
        )  # fmt: skip
    scaled = "" if credit_scale == "none" else f", scaled per {credit_scale}"
    console.print(f"trained {algo} on {env} ({reward} reward{scaled}) → {run_dir}")


def evaluate_cmd(
    run_dir: Path = typer.Argument(..., help="A run directory from `llmca train`."),
    episodes: int = typer.Option(
        100, "--episodes", min=1, help="Evaluation episodes (protocol v2: >= 100; seeds disjoint from data)."
    ),
    seed_offset: int = typer.Option(
        0, "--seeds", min=0, help="Index of the first evaluation seed: episode i plays eval_seed(SEEDS + i) ≥ 2^31."
    ),
    epsilon: float = typer.Option(
        0.0, "--epsilon", min=0.0, max=1.0, help="Replace each action by a random legal one with this probability."
    ),
    act: str = typer.Option(
        "greedy",
        "--act",
        help="greedy | sample. Value-based learners act greedily; the BC family (bc, "
        "filtered-bc, d3rlpy-bc) is reported both ways: sample draws from the softmax over legal logits, seeded.",
    ),
) -> None:
    """Roll the final policy out in the real env (decentralised) and write RUN_DIR/eval.json.

    The default is the greedy policy itself. Deterministic greedy policies can deadlock (e.g. two
    LBF agents blocking each other forever): the summary counts such frozen episodes, and
    --epsilon 0.05 reports the policy with seeded noise.
    """
    from llmca_data.baselines.evaluate import EvalConfig, as_act, evaluate_run

    config = EvalConfig(episodes=episodes, seed_offset=seed_offset, epsilon=epsilon, act=as_act(act))
    result = evaluate_run(run_dir, config)
    score = result["normalized_score"]
    console.print(
        f"{result['env_id']} ({result['act']}): return {result['mean_return']:.3f} ± {result['std_return']:.3f}, "
        f"normalised {'—' if score is None else f'{score:.1f}'}, cost {result['mean_cost']:.2f}, success "
        f"{result['success_rate']:.0%}, frozen {result['frozen_episodes']}/{result['episodes']} episodes"
        f"{', training diverged' if result['diverged'] else ''} → {run_dir / 'eval.json'}"
    )
