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

from llmca_data.cli import console
from llmca_data.cli.progress import progress_bar


def train_cmd(
    algo: str = typer.Argument(..., help="bc | iql-cql | vdn-cql | qmix-cql | d3rlpy-bc | d3rlpy-cql | d3rlpy-bcq"),
    dataset: str = typer.Option(..., "--dataset", help="Dataset directory or Hub repo id."),
    env: str = typer.Option(..., "--env", help="Env id, e.g. lbf-8x8-2p-2f."),
    tier: list[str] = typer.Option([], "--tier", help="Tier(s) to train on (repeatable; default all)."),
    reward: str = typer.Option("team", "--reward", help="team | env | credit_CRITIC (independent learners)."),
    steps: int = typer.Option(2000, "--steps", min=1, help="Gradient steps."),
    seed: int = typer.Option(0, "--seed", help="Training seed."),
    device: str = typer.Option("auto", "--device", help="auto (CUDA when present) | cpu | cuda."),
    out: Path = typer.Option(..., "--out", help="Run directory (config.json, model.safetensors, metrics.jsonl)."),
    task_input: str = typer.Option(
        None, "--task-input", help="iql-cql: append this critic's task (llm-taca) to each agent's input, dropout→1."
    ),
    config: Path = typer.Option(
        None, "--config", help="JSON file of config fields to override (e.g. eval_episodes, hidden, lr)."
    ),
) -> None:
    """Train an offline MARL baseline; credits as rewards turn LLM-MCA's training signal on.

    The bar shows the loss and the last periodic evaluation (return and normalised score);
    metrics.jsonl logs the training and held-out validation losses.
    """
    from llmca_data.baselines.train import load_overrides, train

    with progress_bar(f"train {algo}", "steps") as update:
        run_dir = train(
            algo, dataset, env, tier or None, out, reward=reward, steps=steps, seed=seed, device=device,
            task_input=task_input, overrides=load_overrides(config), progress=update,
        )  # fmt: skip
    console.print(f"trained {algo} on {env} ({reward} reward) → {run_dir}")


def evaluate_cmd(
    run_dir: Path = typer.Argument(..., help="A run directory from `llmca train`."),
    episodes: int = typer.Option(20, "--episodes", min=1, help="Evaluation episodes (seeds disjoint from data)."),
    seed_offset: int = typer.Option(
        0, "--seeds", min=0, help="Index of the first evaluation seed: episode i plays eval_seed(SEEDS + i) ≥ 2^31."
    ),
    epsilon: float = typer.Option(
        0.0, "--epsilon", min=0.0, max=1.0, help="Replace each action by a random legal one with this probability."
    ),
) -> None:
    """Roll the final policy out in the real env (decentralised) and write RUN_DIR/eval.json.

    The default is the greedy policy itself. Deterministic greedy policies can deadlock (e.g. two
    LBF agents blocking each other forever); --epsilon 0.05 reports the policy with seeded noise.
    """
    from llmca_data.baselines.evaluate import EvalConfig, evaluate_run

    result = evaluate_run(run_dir, EvalConfig(episodes=episodes, seed_offset=seed_offset, epsilon=epsilon))
    score = result["normalized_score"]
    console.print(
        f"{result['env_id']}: return {result['mean_return']:.3f} ± {result['std_return']:.3f}, normalised "
        f"{'—' if score is None else f'{score:.1f}'}, cost {result['mean_cost']:.2f}, success "
        f"{result['success_rate']:.0%} over {result['episodes']} episodes → {run_dir / 'eval.json'}"
    )
