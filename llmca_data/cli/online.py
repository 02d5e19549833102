"""``llmca train-online`` and ``llmca plot``: online credit-assignment runs and their learning curves.

Input: an env id and a critic id (train-online); run directories (plot). Output: a run
directory (``config.json``, ``model.safetensors``, ``curve.jsonl``, checkpoints, ``dataset/``)
and a PNG. Registered by the CLI app as ``app.command("train-online")(train_online_cmd)`` and
``app.command("plot")(plot_cmd)``; imports are lazy so ``llmca --help`` stays fast.
"""

from __future__ import annotations

from pathlib import Path

import typer

from llmca_data.cli.output import console, warn
from llmca_data.cli.progress import progress_bar
from llmca_data.config import load_settings, merge_settings

from .llm_options import BASE_URL, CRITIC_IDS, MODEL, RESPONSE_FORMAT


def train_online_cmd(
    env_id: str = typer.Argument(..., help="Env id, e.g. lbf-8x8-2p-2f-coop (see `llmca envs`)."),
    critic: str = typer.Option(
        "team",
        "--critic",
        help=f"team | {CRITIC_IDS}: each agent's reward.",
    ),
    episodes: int = typer.Option(1000, "--episodes", min=1, help="Episodes to collect in total (raise it to extend)."),
    seed: int = typer.Option(0, "--seed", min=0, help="Seeds the network, minibatches and the episodes' env seeds."),
    out: Path = typer.Option(..., "--out", help="Run directory; an existing one is resumed from its checkpoint."),
    critic_every: int = typer.Option(1, "--critic-every", min=1, help="Episodes the critic annotates per call."),
    eval_every: int = typer.Option(50, "--eval-every", min=1, help="Episodes between evaluations (curve rows)."),
    eval_episodes: int = typer.Option(10, "--eval-episodes", min=1, help="Greedy episodes per evaluation."),
    checkpoint_every: int = typer.Option(
        200, "--checkpoint-every", min=1, help="Episodes between checkpoints (and dataset commits)."
    ),
    device: str = typer.Option("auto", "--device", help="auto (CUDA when present) | cpu | cuda."),
    horizon: int = typer.Option(1, "--horizon", min=1, help="counterfactual: steps compared (id counterfactual-hH)."),
    base_url: str = BASE_URL,
    model: str = MODEL,
    response_format: str = RESPONSE_FORMAT,
    episodes_per_prompt: int = typer.Option(1, "--episodes-per-prompt", min=1, help="LLM critics: batch mode."),
    max_window: int = typer.Option(30, "--max-window", min=2, help="LLM critics: most steps per request."),
    credit_scale: str = typer.Option(
        "none",
        "--credit-scale",
        help="none | step | episode: put the critic's credits on the team reward's scale before they enter "
        "the buffer (the run's dataset keeps them raw). none: as the critic gave them; step: each step sums "
        "to its team reward (unrewarded steps get 0); episode: each episode sums to its return, all its "
        "credits scaled by one factor (credit for steps that lead to reward survives).",
    ),
    normalize_credits: bool = typer.Option(
        False, "--normalize-credits", help="Deprecated alias of --credit-scale step."
    ),
    team_reward: str = typer.Option(
        "true",
        "--team-reward",
        help="true | delayed: delayed shows the learner (and an LLM critic) each episode's return at its last "
        "step only; take --critic team, env, shapley-delayed, counterfactual-delayed or an LLM critic.",
    ),
    config: Path = typer.Option(None, "--config", help="JSON file of OnlineConfig fields to override (e.g. lr)."),
) -> None:
    """Online independent Double DQN where each agent learns from its own critic credit.

    Every --critic-every episodes the critic annotates the new episodes (reference critics
    re-simulate them, LLM critics use the cached client of `llmca annotate`) and each agent's
    transitions enter the replay buffer with its own credit; a failed LLM annotation falls back
    to the team reward and is counted. Writes curve.jsonl (evaluation return, normalised score,
    critic calls, tokens, cost, wall time split into env / learner / critic), model.safetensors
    (`llmca evaluate` reads it) and RUN/dataset, every episode with its credits in the dataset
    layout. Killed runs resume from their last checkpoint with the same command.
    """
    from llmca_data.baselines.online import OnlineConfig, train_online, upgrade_settings

    if normalize_credits:
        if credit_scale not in ("none", "step"):
            raise typer.BadParameter(
                f"--normalize-credits is --credit-scale step; drop one of it and --credit-scale {credit_scale}",
                param_hint="--normalize-credits",
            )
        warn("--normalize-credits is deprecated; use --credit-scale step")
        credit_scale = "step"

    llm = {"base_url": base_url, "model": model, "response_format": response_format,
           "episodes_per_prompt": episodes_per_prompt, "max_window": max_window,
           "team_reward": team_reward if critic.startswith("llm-") else "true"}  # fmt: skip
    settings = {
        "env_id": env_id, "critic": critic, "episodes": episodes, "seed": seed, "critic_every": critic_every,
        "eval_every": eval_every, "eval_episodes": eval_episodes, "checkpoint_every": checkpoint_every,
        "device": device, "credit_scale": credit_scale, "team_reward": team_reward,
        "critic_options": {"horizon": horizon, "llm": llm},
    }  # fmt: skip
    overrides = upgrade_settings(load_settings(config), str(config))  # an old file's normalize_credits
    cfg = OnlineConfig.from_dict(merge_settings(settings, overrides), strict=True, owner="train-online")
    with progress_bar(f"train-online {critic}", "episodes") as update:
        result = train_online(cfg, out, progress=update)
    seconds = result.seconds
    total = sum(seconds.values()) or 1.0
    ret, score = result.final_return, result.final_score
    console.print(
        f"{env_id} ({critic}): {result.episodes} episodes, {result.env_steps} steps; final return "
        + ("—" if ret is None else f"{ret:.3f}") + ("" if score is None else f" (normalised {score:.1f})")
        + f"; critic {100 * seconds['critic'] / total:.0f}% of {total:.1f} s; "
        f"{result.fallback_episodes} episodes fell back to the team reward → {out}"
    )  # fmt: skip


def plot_cmd(
    run_dirs: list[Path] = typer.Argument(
        ..., help="Run directories of `llmca train-online` (any envs, critics, seeds)."
    ),
    out: Path = typer.Option(..., "--out", help="PNG file to write."),
    metric: str = typer.Option(
        "eval_score", "--metric", help="eval_score (normalised) | eval_return | any curve field."
    ),
    reps: int = typer.Option(2000, "--reps", min=100, help="Bootstrap resamples of the 95% interval."),
) -> None:
    """Learning curves grouped by (env, critic): IQM over seeds with 95% bootstrap bands (rliable).

    One panel per env, x-axis in episodes; seeds are aligned on their shared evaluation points.
    """
    from llmca_data.baselines.curves import aggregate, plot_curves

    groups = aggregate(run_dirs, metric, reps)
    path = plot_curves(groups, out, metric)
    for g in groups:
        console.print(f"{g.env_id} {g.critic}: {g.seeds} seeds, final IQM {g.iqm[-1]:.3g} at {g.episodes[-1]} episodes")
    console.print(f"wrote {path}")
