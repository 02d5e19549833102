"""Hostile submissions from the red-team pass (issue 17), each built in code: refused with a clear
message, existing data unchanged, nothing written outside the target directory."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import struct
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import safetensors.torch
import torch
from markdown_it import MarkdownIt
from typer.testing import CliRunner

from llmca_data.cli import leaderboard_app
from llmca_data.leaderboard import validate
from llmca_data.leaderboard.evaluate import LeaderboardEvalConfig, ResultsError, evaluate_submission
from llmca_data.leaderboard.render import render
from llmca_data.leaderboard.statistics import StatsConfig
from llmca_data.leaderboard.submission import MAX_SEEDS, DatasetIdentity, SubmissionError, load_submission
from llmca_data.leaderboard.validate import validate_submission

ENV = "lbf-8x8-2p-2f"
SEED0 = f"checkpoints/{ENV}/expert/seed0.safetensors"
PASSWD = b"root:x:0:0:root:/root:/bin/bash\ndaemon:x:1:1:daemon:/usr/sbin:/usr/sbin/nologin\n" * 40
"""Secret-like text: the first 8 bytes read as a u64 header length are 3475222254926655346."""
ONE_EPISODE = LeaderboardEvalConfig(episodes=1)
Edit = Callable[[Path, Callable[[dict[str, Any]], None]], None]
Watch = Callable[..., contextlib.AbstractContextManager[None]]


def snapshot(*roots: Path) -> dict[Path, bytes | None]:
    """Every file (→ its bytes) and folder (→ None) under ``roots``."""
    return {p: None if p.is_dir() else p.read_bytes() for root in roots for p in sorted(root.rglob("*"))}


@pytest.fixture
def watch(tmp_path: Path, bc_runs: list[Path], monkeypatch: pytest.MonkeyPatch) -> Watch:
    """``with watch(target=None):`` the body may write only under ``target``: every other file under
    ``tmp_path`` (the test's data, its working directory) and the runs must be left as they were."""
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    monkeypatch.chdir(cwd)

    @contextlib.contextmanager
    def only(target: Path | None = None) -> Iterator[None]:
        before = snapshot(tmp_path, bc_runs[0].parent)
        yield
        after = snapshot(tmp_path, bc_runs[0].parent)
        if target is not None:
            after = {p: v for p, v in after.items() if p != target and not p.is_relative_to(target)}
        assert after == before

    return only


def seeds_of(body: dict[str, Any], tier: str = "expert") -> dict[str, Any]:
    seeds: dict[str, Any] = body["results"][ENV][tier]
    return seeds


def test_same_slug_cannot_replace_another_teams_result(
    make_sub: Callable[..., Path], identity: DatasetIdentity, tmp_path: Path, watch: Watch
) -> None:
    results = tmp_path / "results"
    official = evaluate_submission(make_sub("official"), results, ONE_EPISODE, identity)
    assert official == results / "llmca-bc" / "results.json"
    hostile = make_sub("hostile", team="LLMCA", algorithm="BC")
    with watch(), pytest.raises(SubmissionError) as caught:
        evaluate_submission(hostile, results, ONE_EPISODE, identity)
    text = str(caught.value)
    assert "already holds the result of another submission" in text and "both are named 'llmca-bc'" in text
    assert "choose a team or algorithm name of your own" in text
    assert json.loads(official.read_text())["submission"]["team"] == "llmca"
    again = evaluate_submission(make_sub("official-again"), results, ONE_EPISODE, identity)  # same bytes: its own
    assert again == official


def test_hard_linked_secret_is_refused_and_its_bytes_never_shown(
    make_sub: Callable[..., Path], lbf_dataset_master: Path, tmp_path: Path, watch: Watch
) -> None:
    sub = make_sub()
    secret = tmp_path / "passwd"
    secret.write_bytes(PASSWD)
    (sub / SEED0).unlink()
    os.link(secret, sub / SEED0)  # ln /etc/passwd checkpoints/.../seed0.safetensors
    as_length = str(struct.unpack("<Q", PASSWD[:8])[0])
    runner = CliRunner()
    with watch():
        linked = runner.invoke(leaderboard_app, ["validate", str(sub), "--dataset", str(lbf_dataset_master)])
    assert linked.exit_code == 1 and "has 2 hard links" in linked.output and "copy the file in" in linked.output
    assert as_length not in linked.output and "root:" not in linked.output

    (sub / SEED0).unlink()
    (sub / SEED0).write_bytes(PASSWD)  # the same bytes copied in: read, but never echoed
    with watch():
        copied = runner.invoke(leaderboard_app, ["validate", str(sub), "--dataset", str(lbf_dataset_master)])
    assert copied.exit_code == 1 and "the header length field exceeds the limit" in copied.output
    assert as_length not in copied.output and "root:" not in copied.output and "daemon" not in copied.output
    assert secret.read_bytes() == PASSWD


def test_many_seeds_on_one_checkpoint_are_refused_before_any_hashing(
    make_sub: Callable[..., Path], edit: Edit, identity: DatasetIdentity, watch: Watch,
    monkeypatch: pytest.MonkeyPatch,
) -> None:  # fmt: skip
    sub = make_sub()
    hashed: list[int] = []
    real_sha256 = hashlib.sha256

    class CountingSha256:
        """``hashlib.sha256`` that records how many bytes it is fed."""

        def __init__(self, data: bytes = b"") -> None:
            self._digest = real_sha256()
            self.update(data)

        def update(self, data: bytes) -> None:
            hashed.append(len(data))
            self._digest.update(data)

        def hexdigest(self) -> str:
            return self._digest.hexdigest()

    headers: list[Path] = []
    real_read_header = validate.read_header

    def counting_read_header(path: Path) -> Any:
        headers.append(path)
        return real_read_header(path)

    monkeypatch.setattr(hashlib, "sha256", CountingSha256)
    monkeypatch.setattr(validate, "read_header", counting_read_header)

    def seeds_on_seed0(count: int) -> Callable[[dict[str, Any]], None]:
        return lambda body: seeds_of(body).update({str(s): seeds_of(body)["0"] for s in range(5, count)})

    edit(sub, seeds_on_seed0(MAX_SEEDS))  # 100 seeds, 96 of them seed 0's file
    with watch(), pytest.raises(SubmissionError) as caught:
        validate_submission(sub, identity)
    shared = [p for p in caught.value.problems if "(the same file)" in p.what]
    assert len(shared) == MAX_SEEDS - 5 == len(caught.value.problems)
    assert all(f"results.{ENV}.expert.0 (the same file)" in p.what for p in shared)
    assert sum(hashed) == (sub / "submission.json").stat().st_size  # only submission.json, no checkpoint byte
    assert len(headers) == 5  # one header read per distinct file

    hashed.clear()
    headers.clear()
    edit(sub, seeds_on_seed0(MAX_SEEDS + 1))
    with watch(), pytest.raises(SubmissionError) as caught:
        validate_submission(sub, identity)
    (problem,) = caught.value.problems
    assert f"{MAX_SEEDS + 1} seeds; at most MAX_SEEDS={MAX_SEEDS} are accepted (no checkpoint was opened)" in str(
        problem
    )
    assert sum(hashed) == (sub / "submission.json").stat().st_size and headers == []


def test_non_finite_weights_are_refused_and_never_ranked(
    make_sub: Callable[..., Path], identity: DatasetIdentity, tmp_path: Path, watch: Watch
) -> None:
    sub = make_sub()
    nan_path, inf_path = sub / SEED0, sub / SEED0.replace("seed0", "seed3")
    tensors = safetensors.torch.load_file(str(nan_path))
    safetensors.torch.save_file({k: torch.full_like(v, float("nan")) for k, v in tensors.items()}, str(nan_path))
    tensors = safetensors.torch.load_file(str(inf_path))
    tensors["agent_net.mlp.0.bias"][0] = float("inf")
    safetensors.torch.save_file(tensors, str(inf_path))
    with watch(), pytest.raises(SubmissionError) as caught:
        evaluate_submission(sub, tmp_path / "results", ONE_EPISODE, identity)
    text = str(caught.value)
    numel = tensors["agent_net.mlp.0.weight"].numel()
    assert f"tensor 'agent_net.mlp.0.weight' holds {numel} non-finite value(s) (NaN or ±inf) of {numel}" in text
    assert f"{SEED0}: tensor 'agent_net.mlp.0.bias' holds {tensors['agent_net.mlp.0.bias'].numel()}" in text
    assert "seed3.safetensors: tensor 'agent_net.mlp.0.bias' holds 1 non-finite value(s)" in text
    assert "retrain the run" in text
    assert not (tmp_path / "results").exists()


def test_checkpoint_under_another_env_or_tier_is_refused(
    make_sub: Callable[..., Path], edit: Edit, identity: DatasetIdentity, watch: Watch
) -> None:
    sub = make_sub()
    edit(sub, lambda body: body["results"][ENV].update(medium=body["results"][ENV].pop("expert")))
    with watch(), pytest.raises(SubmissionError) as caught:
        validate_submission(sub, identity)
    assert [p.what for p in caught.value.problems] == [
        "training.tiers is ['expert'] but the entry is submitted under tier medium"
    ] * 5

    sub = make_sub("metadata")
    path = sub / SEED0
    safetensors.torch.save_file(safetensors.torch.load_file(str(path)), str(path), metadata={"tiers": "random"})
    edit(sub, lambda body: seeds_of(body)["0"].pop("training"))  # the checkpoint's own record still counts
    with watch(), pytest.raises(SubmissionError) as caught:
        validate_submission(sub, identity)
    (problem,) = caught.value.problems
    assert problem.what == "__metadata__ tiers is 'random' but the entry is submitted under tier expert"
    assert problem.fix == "submit each checkpoint under the env and tier its run was trained on"


def test_non_finite_metrics_are_refused_and_results_are_strict_json(
    make_sub: Callable[..., Path], edit: Edit, identity: DatasetIdentity, tmp_path: Path, watch: Watch
) -> None:
    sub = make_sub()
    edit(sub, lambda body: seeds_of(body)["0"]["metrics"].update(normalized_score=float("nan")))
    assert '"normalized_score": NaN' in (sub / "submission.json").read_text()
    _, problems = load_submission(sub)
    assert [str(p) for p in problems] == [
        "submission.json: not strict JSON: NaN is not a JSON number — fix: write it with json.dump(..., "
        "allow_nan=False); report null for a missing metric"
    ]
    path = sub / "submission.json"
    path.write_text(path.read_text().replace("NaN", "1e999"))  # parses as inf
    with watch(), pytest.raises(SubmissionError, match="the number 1e999 is beyond a float's range"):
        evaluate_submission(sub, tmp_path / "results", ONE_EPISODE, identity)

    def refuse(name: str) -> Any:
        raise AssertionError(f"results.json holds {name}")

    written = evaluate_submission(make_sub("clean"), tmp_path / "results", ONE_EPISODE, identity)
    assert json.loads(written.read_text(), parse_constant=refuse)["entries"][ENV]["expert"]
    body = json.loads(written.read_text())
    body["entries"][ENV]["expert"]["0"]["verified"]["normalized_score"] = float("inf")
    written.write_text(json.dumps(body))  # a results.json written by hand, or by an old version
    with watch(), pytest.raises(ResultsError, match="is not a strict-JSON results file"):
        render(tmp_path / "results", tmp_path / "site", StatsConfig(reps=100))


HOSTILE_TEAM = "[click me](https://evil.example) www.evil.example"
HOSTILE_ALGO = '<img src=x onerror="alert(1)">'


def test_names_cannot_inject_links_or_html(
    make_sub: Callable[..., Path], edit: Edit, identity: DatasetIdentity, tmp_path: Path, watch: Watch
) -> None:
    sub = make_sub()
    edit(sub, lambda body: body.update(team=HOSTILE_TEAM, algorithm=HOSTILE_ALGO))
    with watch(), pytest.raises(SubmissionError) as caught:
        validate_submission(sub, identity)
    rule = "1-80 letters, digits, spaces and . _ + -, starting with a letter or digit"
    assert [p.what for p in caught.value.problems] == [
        f"'team' must be a name of {rule} (it is shown on the leaderboard)",
        f"'algorithm' must be a name of {rule} (shown on the leaderboard)",
    ]

    results = tmp_path / "results"  # results from before names were checked, written by hand
    written = evaluate_submission(make_sub("clean"), results, ONE_EPISODE, identity)
    body = json.loads(written.read_text())
    body["submission"].update(team=HOSTILE_TEAM, algorithm=HOSTILE_ALGO)
    written.write_text(json.dumps(body))
    site = tmp_path / "site"
    with watch(target=site):
        page = render(results, site, StatsConfig(reps=100))
    rendered = MarkdownIt("commonmark", {"html": True}).enable("table").render(page.markdown.read_text())
    images = re.findall(r"<img [^>]*>", rendered)
    assert len(images) == 2 and all(re.fullmatch(r'<img src="plots/[^"]+" alt="\w+" />', i) for i in images)
    assert "<a " not in rendered and "onerror" not in "".join(images)
    assert "[click me](https://evil.example) www.evil.example" in rendered  # shown as text
    assert "&lt;img src=x onerror=&quot;alert(1)&quot;&gt;" in rendered
    assert "<img src=x" not in page.html.read_text() and "<a href" not in page.html.read_text()
