"""Kill a real ``train_online`` process with a signal, resume it, and check nothing is duplicated."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pyarrow as pa

from llmca_data.baselines.online import CURVE, OnlineConfig, train_online
from llmca_data.baselines.online_io import CHECKPOINT_POINTER, RUN_DATASET
from llmca_data.shards import Manifest, read_shard
from llmca_data.validate import validate

ENV = "lbf-8x8-2p-2f-coop"
CONFIG = {"critic": "uniform", "critic_every": 5, "eval_every": 10, "checkpoint_every": 10, "eval_episodes": 1,
          "device": "cpu", "hidden": [32], "learning_starts": 100, "updates_per_step": 0.05}  # fmt: skip
SCRIPT = """
import json, sys
from pathlib import Path
from llmca_data.baselines.online import OnlineConfig, train_online
train_online(OnlineConfig.from_dict(json.loads(sys.argv[1])), Path(sys.argv[2]))
"""


def checkpointed(run: Path) -> int:
    try:
        return int(json.loads((run / CHECKPOINT_POINTER).read_text())["episodes"])
    except (FileNotFoundError, ValueError):  # not written yet (the pointer is replaced atomically)
        return 0


def test_killed_run_resumes_without_duplicates(
    tmp_path: Path, poll: Callable[[Callable[[], bool], float], None]
) -> None:
    run = tmp_path / "run"
    body = {"env_id": ENV, "episodes": 100_000, **CONFIG}
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen([sys.executable, "-c", SCRIPT, json.dumps(body), str(run)], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)  # fmt: skip
    try:
        poll(lambda: checkpointed(run) >= 20 or proc.poll() is not None, 90)
        assert proc.poll() is None, proc.stderr.read().decode() if proc.stderr else ""
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
    at_kill = checkpointed(run)
    before = [json.loads(line) for line in (run / CURVE).read_text().splitlines()]
    target = at_kill + 30  # past whatever the dataset committed beyond the checkpoint
    result = train_online(OnlineConfig.from_dict({**body, "episodes": target}), run)
    assert result.episodes == target
    rows = [json.loads(line) for line in (run / CURVE).read_text().splitlines()]
    assert [r["episodes"] for r in rows] == list(range(10, target + 1, 10))
    kept = [r for r in before if r["episodes"] <= at_kill]
    assert rows[: len(kept)] == kept, "rows up to the checkpoint are kept as they were"
    assert [r["env_steps"] for r in rows] == sorted(r["env_steps"] for r in rows)
    root = run / RUN_DATASET
    eps = pa.concat_tables([read_shard(root / str(n)) for n in Manifest.load(root).shards(ENV, "episodes")])
    assert sorted(eps.column("episode_id").to_pylist()) == list(range(target))
    assert validate(root).ok
