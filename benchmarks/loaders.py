"""Loader speed against its peers, measured in one run.

Builds an LBF dataset of about ``--steps`` steps (random tier) in a temporary directory and
prints three comparisons:

1. ``OfflineDataset.transitions()`` build time ÷ raw pyarrow decode of the same columns of the
   same shards (steps and episodes) with ``pq.ParquetFile(path).read(columns)``, the fastest
   pyarrow path (``pq.read_table`` goes through the dataset API and is ~2x slower on one
   file). Best of 5, alternating the two. Goal ≤ 1.5.
2. ``datasets.load_dataset`` of the steps config, cold (fresh cache) and warm (same cache),
   against ``OfflineDataset.steps()`` (a polars scan, collected), and the ``obs`` column as a
   numpy array through ``with_format("numpy")`` against polars' ``pl.Array`` → numpy. It needs
   a README.md with ``configs:``: rendered by ``llmca_data.build`` when that module exists,
   else a minimal configs-only README is written into the temporary dataset (the output says so).
3. Random minibatch sampling from a resident dataset: ``torch.randint`` indices into every
   transition tensor, on CPU with one thread, as ``tensor[idx]`` and as ``sample_batch``
   (``torch.index_select``). Goal ≥ 1 M transitions/s.

Usage: ``python benchmarks/loaders.py [--steps 200000] [--quick]``
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import shutil
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")

import pyarrow.parquet as pq
import torch

from llmca_data.collect import CollectConfig, collect
from llmca_data.loaders import OfflineDataset, sample_batch
from llmca_data.shards import Manifest

ENV = "lbf-8x8-2p-2f"
STEP_COLUMNS = [
    "episode_id",
    "t",
    "obs",
    "state",
    "action",
    "action_mask",
    "reward_team",
    "cost",
    "terminated",
    "truncated",
]
EPISODE_COLUMNS = ["episode_id", "final_obs", "final_state", "final_action_mask"]


def best_of(repeats: int, fn: Callable[[], object]) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def build(root: Path, steps: int) -> int:
    episodes = max(8, steps // 45)  # LBF random episodes average ~45-50 steps
    result = collect(root, CollectConfig(ENV, "random", episodes, seed=0, workers=2, chunk_episodes=256))
    return result.new_steps


def raw_decode(root: Path) -> None:
    manifest = Manifest.load(root)
    for name in manifest.shards(ENV, "steps"):
        pq.ParquetFile(root / str(name)).read(columns=STEP_COLUMNS)
    for name in manifest.shards(ENV, "episodes"):
        pq.ParquetFile(root / str(name)).read(columns=EPISODE_COLUMNS)


def has_configs(root: Path) -> bool:
    readme = root / "README.md"
    return readme.exists() and "configs:" in readme.read_text()


def write_minimal_card(root: Path) -> None:
    (root / "README.md").write_text(
        "---\nconfigs:\n"
        f"- config_name: {ENV}\n  data_files:\n  - split: random\n    path: data/{ENV}/steps/random-*.parquet\n"
        "---\n"
    )


def bench_datasets(root: Path, ds: OfflineDataset, repeats: int) -> None:
    try:
        from datasets import load_dataset
    except ImportError:
        print("2. datasets not installed (pip install 'llmca-data[hub]'): skipped")
        return
    note = ""
    if not has_configs(root) and importlib.util.find_spec("llmca_data.build") is not None:
        from llmca_data.build import build as build_card

        build_card(root)
        note = " (card rendered by llmca_data.build)"
    if not has_configs(root):
        write_minimal_card(root)
        note = " (no rendered card: minimal configs-only README.md written into the temporary dataset)"
    cache = Path(tempfile.mkdtemp(prefix="llmca-bench-hf-"))
    try:
        start = time.perf_counter()
        load_dataset(str(root), ENV, split="random", cache_dir=str(cache))
        cold = time.perf_counter() - start
        warm = best_of(repeats, lambda: load_dataset(str(root), ENV, split="random", cache_dir=str(cache)))
        hf = load_dataset(str(root), ENV, split="random", cache_dir=str(cache))
        hf_obs = best_of(1, lambda: hf.with_format("numpy")["obs"][:])
    finally:
        shutil.rmtree(cache, ignore_errors=True)
    scan = best_of(repeats, ds.steps)
    pl_obs = best_of(repeats, lambda: ds.steps(["obs"])["obs"].to_numpy())
    print(f"2. datasets.load_dataset{note}")
    print(f"   cold {cold:.3f} s, warm {warm:.3f} s; polars scan (all columns, collected) {scan:.3f} s")
    print(f"   load_dataset ÷ polars: cold {cold / scan:.1f}x, warm {warm / scan:.1f}x (warm only memory-maps Arrow)")
    print(
        f"   obs as numpy [M, N, obs_dim]: datasets numpy format {hf_obs:.3f} s, polars {pl_obs:.3f} s: "
        f"ratio {hf_obs / pl_obs:.0f}x"
    )


def getitem_batch(data: dict[str, torch.Tensor], batch_size: int) -> dict[str, torch.Tensor]:
    idx = torch.randint(data["t"].shape[0], (batch_size,))
    return {k: v[idx] for k, v in data.items()}


def bench_sampling(
    data: dict[str, torch.Tensor], sample: Callable[[dict[str, torch.Tensor], int], object], size: int, seconds: float
) -> float:
    done = 0
    start = time.perf_counter()
    while time.perf_counter() - start < seconds:
        for _ in range(100):
            sample(data, size)
        done += 100 * size
    return done / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=200_000)
    parser.add_argument("--quick", action="store_true", help="20k steps, one repeat")
    args = parser.parse_args()
    steps, repeats = (20_000, 2) if args.quick else (args.steps, 5)
    torch.set_num_threads(1)
    root = Path(tempfile.mkdtemp(prefix="llmca-bench-loaders-")) / "ds"
    try:
        start = time.perf_counter()
        m = build(root, steps)
        print(f"dataset: {ENV} random, {m:,} steps, built in {time.perf_counter() - start:.1f} s")
        ds = OfflineDataset.open(root, ENV)
        raw, ours = float("inf"), float("inf")
        for _ in range(repeats):  # alternate, so both see the same machine load
            raw = min(raw, best_of(1, lambda: raw_decode(root)))
            ours = min(ours, best_of(1, lambda: ds.transitions()))
        print("1. transitions() ÷ raw pyarrow decode of the same columns (goal <= 1.5)")
        print(f"   raw {raw:.3f} s ({m / raw / 1e6:.2f} M rows/s), transitions {ours:.3f} s: ratio {ours / raw:.2f}")
        bench_datasets(root, ds, repeats)
        data = ds.transitions()
        print(f"3. random minibatch sampling, resident on CPU, 1 thread, {len(data)} tensors (goal >= 1 M/s)")
        for size in (256, 1024, 4096):
            rates = [bench_sampling(data, fn, size, 0.5 if args.quick else 2.0) for fn in (getitem_batch, sample_batch)]
            print(f"   batch {size:5d}: tensor[idx] {rates[0] / 1e6:.2f} M/s, sample_batch {rates[1] / 1e6:.2f} M/s")
    finally:
        shutil.rmtree(root.parent, ignore_errors=True)


if __name__ == "__main__":
    main()
