"""The LLM critic with the embedded llama.cpp model (SmolLM2-135M), measured in one run.

Prints (goals from issue 5):
1. prompt tokens per episode with one episode per prompt (E = 1) vs E = 4 (batch mode);
   goal ≥ 2× fewer per episode with E = 4;
2. a rerun answered from the cache ÷ the first run, in seconds; goal ≤ 0.02;
3. the validity of replies per response-format mode: first reply valid (ok), valid after
   the corrective retry (repaired), or failed;
4. seconds per episode by env.
Token counts are the server's own (``usage``). Short expert episodes keep it to minutes.

Usage: ``python benchmarks/llm_critic.py [--episodes K]``
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from collections import Counter
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")

from llmca_data.annotation.llm.cache import ReplyCache
from llmca_data.annotation.llm.critic import LLMConfig, LLMCritic
from llmca_data.annotation.llm.server import LocalLLMServer
from llmca_data.envs import make_env
from llmca_data.rollout import Episode, run_episode, tier_rng
from llmca_data.tiers import tier_policy


def episodes(env_id: str, count: int, **kwargs: object) -> list[Episode]:
    env = make_env(env_id, **kwargs)
    out = []
    for seed in range(count):
        e = run_episode(env, tier_policy(env_id, "expert", tier_rng(seed)), seed, "expert")
        e.episode_id = seed
        out.append(e)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--episodes", type=int, default=4)
    args = parser.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="llmca-bench-llm-"))
    lbf = episodes("lbf-8x8-2p-2f", args.episodes)
    env = make_env("lbf-8x8-2p-2f")
    with LocalLLMServer() as server:

        def critic(cache: str, **kw: object) -> LLMCritic:
            config = LLMConfig(base_url=server.base_url, model=server.model, **kw)  # type: ignore[arg-type]
            return LLMCritic(config, cache=ReplyCache(tmp / f"{cache}.sqlite"))

        start = time.perf_counter()
        single = critic("e1").annotate_batch(lbf, env)
        first_s = time.perf_counter() - start
        batch = critic("e4", episodes_per_prompt=4).annotate_batch(lbf, env)
        start = time.perf_counter()
        critic("e1").annotate_batch(lbf, env)
        cached_s = time.perf_counter() - start
        per_single = sum(o.tokens_in for o in single) / len(lbf)
        per_batch = sum(o.tokens_in for o in batch) / len(lbf)
        print(f"prompt tokens per episode: E=1 {per_single:.0f}, E=4 {per_batch:.0f} -> "
              f"{per_single / per_batch:.2f}x fewer (goal >= 2)")  # fmt: skip
        print(f"cached rerun: {cached_s:.3f} s / first run {first_s:.1f} s = {cached_s / first_s:.4f} (goal <= 0.02)")
        print(f"batch E=4 statuses: {dict(Counter(o.status for o in batch))}")

        print("\nreply validity per response format (lbf-8x8-2p-2f expert):")
        for mode in ("grammar", "json_object", "none"):
            outs = single if mode == "grammar" else critic(mode, response_format=mode).annotate_batch(lbf, env)
            counts = Counter(o.status for o in outs)
            print(f"  {mode:<12} ok {counts['ok']}, repaired {counts['repaired']}, failed {counts['failed']} "
                  f"of {len(outs)}")  # fmt: skip

        print("\nseconds per episode (llm-mca, grammar, cold cache):")
        print(
            f"  lbf-8x8-2p-2f        {first_s / len(lbf):6.1f} s  ({sum(e.length for e in lbf) / len(lbf):.0f} steps)"
        )
        for env_id, kwargs in (("spaceworld-10x10-3a", {}), ("rware-tiny-2ag", {"max_steps": 30})):
            eps = episodes(env_id, 2, **kwargs)
            start = time.perf_counter()
            outs = critic(env_id).annotate_batch(eps, make_env(env_id, **kwargs))
            took = (time.perf_counter() - start) / len(eps)
            steps = sum(e.length for e in eps) / len(eps)
            statuses = dict(Counter(o.status for o in outs))
            print(f"  {env_id:<20} {took:6.1f} s  ({steps:.0f} steps, {statuses})")


if __name__ == "__main__":
    main()
