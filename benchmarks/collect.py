"""Collection speed against its peers, measured in one run on one core.

Prints three ratios (goals from issue 3):

1. collection ÷ raw env stepping, per env: our ``collect`` (policy, recording every step,
   writing and hashing the shards, manifest) in steps/s, over the wrapped package's own env
   stepped through ``gym.make`` with the same uniform-random joint actions. Goal ≥ 0.8 for
   LBF and RWARE.
2. Spaceworld vectorised agent-steps/s (B = 4096, random legal actions) ÷ raw LBF 8x8
   agent-steps/s. Goal ≥ 50.
3. shard write MB/s and ``validate`` MB/s (of uncompressed Arrow data and of files).

Usage: ``python benchmarks/collect.py [--quick]``
"""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")

import gymnasium as gym
import numpy as np

from llmca_data.collect import CollectConfig, collect
from llmca_data.envs.ids import EnvId
from llmca_data.shards import Manifest, read_shard, write_shard
from llmca_data.validate import validate


def raw_steps_per_s(env_id: str, steps: int) -> float:
    """The wrapped package's env via gym.make, uniform random joint actions, auto-reset."""
    import lbforaging  # noqa: F401
    import rware  # noqa: F401

    parsed = EnvId.parse(env_id)
    env = gym.make(parsed.gym_id, disable_env_checker=True)
    n, a = parsed.n_agents, int(env.action_space[0].n)
    rng = np.random.default_rng(0)
    env.reset(seed=0)
    start = time.perf_counter()
    for _ in range(steps):
        _, _, term, trunc, _ = env.step(tuple(rng.integers(0, a, n).tolist()))
        if term or trunc:
            env.reset()
    return steps / (time.perf_counter() - start)


def collect_steps_per_s(env_id: str, episodes: int, root: Path) -> tuple[float, int]:
    shutil.rmtree(root, ignore_errors=True)
    start = time.perf_counter()
    result = collect(root, CollectConfig(env_id, "random", episodes, seed=0, chunk_episodes=64))
    return result.new_steps / (time.perf_counter() - start), result.new_steps


def spaceworld_agent_steps_per_s(batch: int, steps: int) -> float:
    from llmca_data.envs.spaceworld import SpaceworldConfig, VectorSpaceworld

    config = SpaceworldConfig()
    env = VectorSpaceworld(config, batch)
    env.reset(np.arange(batch))
    rng = np.random.default_rng(0)
    start = time.perf_counter()
    for _ in range(steps):
        mask = env.action_mask()  # [B, N, A]
        keys = rng.random(mask.shape)
        keys[~mask] = -1.0
        _, _, _, term, trunc = env.step(keys.argmax(-1))
        done = term | trunc
        if done.any():
            idx = np.flatnonzero(done)
            env.reset_envs(idx, rng.integers(0, 2**31, idx.size))
    return batch * steps * config.n_agents / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="Fewer steps (noisier).")
    args = parser.parse_args()
    scale = 0.25 if args.quick else 1.0
    tmp = Path(tempfile.mkdtemp(prefix="llmca-bench-"))
    print(f"{'env':<20} {'raw steps/s':>12} {'collect steps/s':>16} {'ratio':>7}  goal")
    lbf_raw = 0.0
    for env_id, episodes in (
        ("lbf-8x8-2p-2f", 400),
        ("lbf-10x10-3p-3f", 300),
        ("rware-tiny-2ag", 24),
        ("rware-small-4ag", 12),
    ):
        episodes = max(4, int(episodes * scale))
        ours, steps = collect_steps_per_s(env_id, episodes, tmp / env_id)
        raw = raw_steps_per_s(env_id, steps)
        lbf_raw = raw if env_id == "lbf-8x8-2p-2f" else lbf_raw
        print(f"{env_id:<20} {raw:>12.0f} {ours:>16.0f} {ours / raw:>7.2f}  >= 0.8")

    sw = spaceworld_agent_steps_per_s(4096, max(20, int(100 * scale)))
    lbf_agent = lbf_raw * 2
    print(
        f"\nspaceworld B=4096: {sw:,.0f} agent-steps/s; raw LBF 8x8: {lbf_agent:,.0f} agent-steps/s; "
        f"ratio {sw / lbf_agent:.0f} (goal >= 50)"
    )

    # Shard write and validate throughput on the LBF data collected above (replicated).
    root = tmp / "lbf-8x8-2p-2f"
    steps_rel = Manifest.load(root).shards("lbf-8x8-2p-2f", "steps", "random")[0]
    table = read_shard(root / str(steps_rel))
    import pyarrow as pa

    big = pa.concat_tables([table] * max(1, int(20 * scale)))
    start = time.perf_counter()
    entry = write_shard(tmp / "w", "data/x/steps/random-00000.parquet", big)
    took = time.perf_counter() - start
    print(
        f"\nshard write: {big.nbytes / took / 1e6:.0f} MB/s of Arrow data ({entry.bytes / took / 1e6:.0f} MB/s of file)"
    )
    start = time.perf_counter()
    report = validate(root)
    took = time.perf_counter() - start
    assert report.ok, report.problems
    print(f"validate:    {report.bytes / took / 1e6:.0f} MB/s of files ({report.rows / took:,.0f} rows/s)")
    shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
