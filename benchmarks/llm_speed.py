"""Seconds and tokens per episode of the dense (``llm-mca``) vs the shares form (``llm-mca-shares``), one run.

Both critics ask the same embedded llama.cpp server (SmolLM2-135M) about the same expert episodes
(LBF and Spaceworld), each with an empty reply cache. Before the timed episodes each critic
answers one warm-up episode, so its static prefix (rules, definitions, task) is in the server's
KV cache, as it is for every request but the first of an ``annotate`` run; the warm-up's cost is
printed separately. Token counts are the server's own (``usage``). Goals (issue 18): shares ÷ dense
seconds per episode ≤ 1/3 on both envs, prompt tokens per episode ≤ 1/2.

Usage: ``python benchmarks/llm_speed.py [--episodes K] [--critics llm-mca llm-mca-shares]``
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("OMP_NUM_THREADS", "1")

from llmca_data.annotation.critic import run_critic
from llmca_data.annotation.llm.cache import ReplyCache
from llmca_data.annotation.llm.critic import LLMConfig, LLMCritic
from llmca_data.annotation.llm.server import LocalLLMServer
from llmca_data.envs import make_env
from llmca_data.rollout import Episode, run_episode, tier_rng
from llmca_data.tiers import tier_policy

ENVS = ("lbf-8x8-2p-2f", "spaceworld-10x10-3a")


def expert_episodes(env_id: str, seeds: range) -> list[Episode]:
    env = make_env(env_id)
    out = []
    for seed in seeds:
        episode = run_episode(env, tier_policy(env_id, "expert", tier_rng(seed)), seed, "expert")
        episode.episode_id = seed
        out.append(episode)
    return out


def measure(server: LocalLLMServer, critic: str, env_id: str, count: int, tmp: Path) -> dict[str, Any]:
    config = LLMConfig(critic=critic, base_url=server.base_url, model=server.model)
    llm = LLMCritic(config, cache=ReplyCache(tmp / f"{critic}-{env_id}.sqlite"))
    env = make_env(env_id)
    start = time.perf_counter()
    warm = run_critic(llm, expert_episodes(env_id, range(1000, 1001)), env)[0]
    warm_s = time.perf_counter() - start
    episodes = expert_episodes(env_id, range(count))
    start = time.perf_counter()
    outputs = run_critic(llm, episodes, env)
    seconds = time.perf_counter() - start
    return {
        "critic": critic, "env": env_id, "episodes": count, "steps": sum(e.length for e in episodes),
        "s_per_episode": seconds / count,
        "prompt_tokens_per_episode": sum(o.tokens_in for o in outputs) / count,
        "completion_tokens_per_episode": sum(o.tokens_out for o in outputs) / count,
        "status": {s: sum(o.status == s for o in outputs) for s in ("ok", "repaired", "failed")},
        "warmup_s": warm_s, "warmup_prompt_tokens": warm.tokens_in,
    }  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--episodes", type=int, default=4)
    parser.add_argument("--critics", nargs=2, default=["llm-mca", "llm-mca-shares"], metavar=("BEFORE", "AFTER"))
    parser.add_argument("--out", type=Path, default=None, help="also write the rows as JSON here")
    args = parser.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="llmca-llm-speed-"))
    rows = []
    with LocalLLMServer() as server:
        for env_id in ENVS:
            for critic in args.critics:
                rows.append(measure(server, critic, env_id, args.episodes, tmp))
                print(json.dumps(rows[-1]), flush=True)
    print(f"\n{'env':22} {'critic':16} {'s/ep':>7} {'prompt tok/ep':>14} {'compl tok/ep':>13} status")
    for r in rows:
        print(f"{r['env']:22} {r['critic']:16} {r['s_per_episode']:7.2f} {r['prompt_tokens_per_episode']:14.0f} "
              f"{r['completion_tokens_per_episode']:13.0f} {r['status']}")  # fmt: skip
    for env_id in ENVS:
        before, after = (next(r for r in rows if r["env"] == env_id and r["critic"] == c) for c in args.critics)
        print(f"{env_id}: seconds ratio {after['s_per_episode'] / before['s_per_episode']:.2f} (goal ≤ 0.33), "
              f"prompt tokens ratio {after['prompt_tokens_per_episode'] / before['prompt_tokens_per_episode']:.2f} "
              "(goal ≤ 0.5)")  # fmt: skip
    if args.out:
        args.out.write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
