"""Every way a submission is refused, each as a real crafted file on disk, before any tensor is deserialised."""

from __future__ import annotations

import json
import os
import pickle
import struct
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import safetensors
import safetensors.torch
import torch
from hub_server import HubServer

from llmca_data.leaderboard.checkpoint import MAX_HEADER_BYTES
from llmca_data.leaderboard.identity import dataset_identity
from llmca_data.leaderboard.submission import DatasetIdentity, SubmissionError
from llmca_data.leaderboard.validate import validate_submission

ENV = "lbf-8x8-2p-2f"
SEED0 = f"checkpoints/{ENV}/expert/seed0.safetensors"
Edit = Callable[[Path, Callable[[dict[str, Any]], None]], None]


def forbid_deserialising(monkeypatch: pytest.MonkeyPatch) -> None:
    """Make every way of deserialising tensors or pickles fail the test."""

    def refuse(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("something was deserialised during validation")

    for owner, name in [(torch, "load"), (pickle, "load"), (pickle, "loads"), (safetensors, "safe_open"),
                        (safetensors.torch, "load_file"), (safetensors.torch, "load")]:  # fmt: skip
        monkeypatch.setattr(owner, name, refuse)


def refused(
    sub: Path, expected: DatasetIdentity | None, monkeypatch: pytest.MonkeyPatch, *fragments: str
) -> SubmissionError:
    """Validate ``sub`` with deserialisation forbidden; it must be refused with every fragment in the message."""
    forbid_deserialising(monkeypatch)
    with pytest.raises(SubmissionError) as info:
        validate_submission(sub, expected)
    text = str(info.value)
    for fragment in fragments:
        assert fragment in text, text
    assert all(str(p) in text for p in info.value.problems)
    return info.value


def seed0_entry(body: dict[str, Any]) -> dict[str, Any]:
    entry: dict[str, Any] = body["results"][ENV]["expert"]["0"]
    return entry


def raw_file(header: dict[str, Any] | bytes, buffer: bytes = b"", length: int | None = None) -> bytes:
    """Safetensors bytes crafted by hand: u64 header length, header, buffer."""
    head = header if isinstance(header, bytes) else json.dumps(header).encode()
    return struct.pack("<Q", len(head) if length is None else length) + head + buffer


def torch_zip(path: Path) -> None:
    torch.save({"agent_net.mlp.0.weight": torch.zeros(2, 2)}, path)


def torch_legacy(path: Path) -> None:
    torch.save({"agent_net.mlp.0.weight": torch.zeros(2, 2)}, path, _use_new_zipfile_serialization=False)


def zip_archive(path: Path) -> None:
    with zipfile.ZipFile(path, "w") as z:
        z.writestr("model.bin", b"\0" * 64)


F32 = {"dtype": "F32"}
CRAFTED: dict[str, tuple[Callable[[Path], None], str]] = {
    "torch-save-zip": (torch_zip, "zip (torch.save) archive file renamed .safetensors"),
    "torch-save-pickle": (torch_legacy, "a pickle file renamed .safetensors"),
    "pickle-dumps": (lambda p: p.write_bytes(pickle.dumps({"w": [1.0, 2.0]})), "a pickle file renamed"),
    "zip": (zip_archive, "zip (torch.save) archive file renamed"),
    "header-over-limit": (lambda p: p.write_bytes(raw_file(b"{}", b" " * 64, MAX_HEADER_BYTES + 1)),
                          "exceeds the limit MAX_HEADER_BYTES"),
    "header-past-eof": (lambda p: p.write_bytes(raw_file(b"{}", b"", 4096)), "runs past the end of the file"),
    "header-not-json": (lambda p: p.write_bytes(raw_file(b"this is no json!")), "header is not valid UTF-8 JSON"),
    "header-not-utf8": (lambda p: p.write_bytes(raw_file(b"\xff\xfe{}")), "header is not valid UTF-8 JSON"),
    "header-not-object": (lambda p: p.write_bytes(raw_file([1, 2])), "header must be a JSON object"),
    "duplicate-name": (lambda p: p.write_bytes(raw_file(b'{"a": 1, "a": 2}')), "duplicate key 'a'"),
    "too-short": (lambda p: p.write_bytes(b"abc"), "too short"),
    "unknown-dtype": (lambda p: p.write_bytes(raw_file({"a": {"dtype": "F33", "shape": [1], "data_offsets": [0, 4]}},
                                                       b"\0" * 4)), "unknown dtype 'F33'"),
    "negative-shape": (lambda p: p.write_bytes(raw_file({"a": {**F32, "shape": [-1], "data_offsets": [0, 4]}},
                                                        b"\0" * 4)), "shape must be a list of non-negative ints"),
    "offsets-inconsistent": (lambda p: p.write_bytes(raw_file({"a": {**F32, "shape": [2, 2], "data_offsets": [0, 8]}},
                                                              b"\0" * 8)), "F32[2, 2] needs 16"),
    "offsets-overlap": (lambda p: p.write_bytes(raw_file({"a": {**F32, "shape": [4], "data_offsets": [0, 16]},
                                                          "b": {**F32, "shape": [4], "data_offsets": [8, 24]}},
                                                         b"\0" * 24)), "overlap tensor 'a'"),
    "offsets-past-eof": (lambda p: p.write_bytes(raw_file({"a": {**F32, "shape": [4], "data_offsets": [0, 16]}},
                                                          b"\0" * 8)), "past the end of the file"),
    "offsets-gap": (lambda p: p.write_bytes(raw_file({"a": {**F32, "shape": [1], "data_offsets": [4, 8]}},
                                                     b"\0" * 8)), "gap of 4 bytes"),
    "trailing-bytes": (lambda p: p.write_bytes(raw_file({"a": {**F32, "shape": [1], "data_offsets": [0, 4]}},
                                                        b"\0" * 12)), "trailing bytes"),
}  # fmt: skip


def test_valid_submission_passes(make_sub: Callable[..., Path], identity: DatasetIdentity,
                                 monkeypatch: pytest.MonkeyPatch) -> None:  # fmt: skip
    sub = make_sub()
    forbid_deserialising(monkeypatch)
    checked = validate_submission(sub, identity)
    assert [s.entry.seed for s in checked.seeds] == [0, 1, 2, 3, 4]
    assert checked.submission.name == "llmca-bc" and checked.submission.dataset == identity
    assert all(s.entry.architecture == "agent-net" and s.spec.hidden == (16,) for s in checked.seeds)


@pytest.mark.parametrize("case", list(CRAFTED))
def test_crafted_checkpoint_is_refused(case: str, make_sub: Callable[..., Path], identity: DatasetIdentity,
                                       monkeypatch: pytest.MonkeyPatch) -> None:  # fmt: skip
    sub = make_sub()
    write, message = CRAFTED[case]
    write(sub / SEED0)
    error = refused(sub, identity, monkeypatch, message, SEED0)
    assert len(error.problems) == 1 and error.problems[0].fix


def _rewrite_tensors(path: Path, change: Callable[[dict[str, torch.Tensor]], dict[str, torch.Tensor]]) -> None:
    safetensors.torch.save_file(change(safetensors.torch.load_file(str(path))), str(path))


TENSOR_EDITS: dict[str, tuple[Callable[[dict[str, torch.Tensor]], dict[str, torch.Tensor]], tuple[str, ...]]] = {
    "wrong-name": (lambda t: {k.replace("agent_net.", "net."): v for k, v in t.items()},
                   ("unexpected tensor 'net.mlp.0.weight'", "missing tensor 'agent_net.mlp.0.weight'")),
    "wrong-shape": (lambda t: {**t, "agent_net.mlp.0.weight": torch.zeros(16, 15)},
                    ("'agent_net.mlp.0.weight' has shape [16, 15], the architecture needs [16, 14]",)),
    "wrong-dtype": (lambda t: {k: v.half() for k, v in t.items()}, ("has dtype F16, the architecture needs F32",)),
    "extra-tensor": (lambda t: {**t, "agent_net.backdoor": torch.zeros(1)},
                     ("unexpected tensor 'agent_net.backdoor'",)),
}  # fmt: skip


@pytest.mark.parametrize("case", list(TENSOR_EDITS))
def test_wrong_tensors_are_refused(case: str, make_sub: Callable[..., Path], identity: DatasetIdentity,
                                   monkeypatch: pytest.MonkeyPatch) -> None:  # fmt: skip
    sub = make_sub()
    change, messages = TENSOR_EDITS[case]
    _rewrite_tensors(sub / SEED0, change)
    refused(sub, identity, monkeypatch, *messages)


CONFIG_EDITS: dict[str, tuple[Callable[[dict[str, Any]], None], str]] = {
    "unknown-architecture": (lambda e: e.update(architecture="resnet-9000"), "unknown architecture 'resnet-9000'"),
    "d3rlpy-architecture": (lambda e: e.update(architecture="d3rlpy-cql"), "d3rlpy runs are not accepted"),
    "hidden-not-ints": (lambda e: e["config"].update(hidden="abc"), "config 'hidden' must be a list"),
    "hidden-too-wide": (lambda e: e["config"].update(hidden=[10**6]), "config 'hidden' must be a list"),
    "unknown-key": (lambda e: e["config"].update(dropout=0.1), "config key 'dropout' is not a field of agent-net"),
    "missing-key": (lambda e: e["config"].pop("obs_dim"), "config misses 'obs_dim'"),
    "bool-not-int": (lambda e: e["config"].update(n_agents=True), "config 'n_agents' must be an int"),
    "env-mismatch": (lambda e: e["config"].update(obs_dim=13), "config obs_dim=13 but lbf-8x8-2p-2f has 12"),
    "absolute-path": (lambda e: e.update(checkpoint="/etc/passwd.safetensors"), "is absolute or malformed"),
    "dotdot-path": (lambda e: e.update(checkpoint="../outside.safetensors"), "contains '..'"),
    "not-safetensors": (lambda e: e.update(checkpoint="submission.json"), "does not end with .safetensors"),
    "missing-file": (lambda e: e.update(checkpoint="nothing/here.safetensors"), "does not exist"),
}


@pytest.mark.parametrize("case", list(CONFIG_EDITS))
def test_bad_seed_entries_are_refused(case: str, make_sub: Callable[..., Path], edit: Edit,
                                      identity: DatasetIdentity, monkeypatch: pytest.MonkeyPatch) -> None:  # fmt: skip
    sub = make_sub()
    (sub.parent / "outside.safetensors").write_bytes((sub / SEED0).read_bytes())
    change, message = CONFIG_EDITS[case]
    edit(sub, lambda body: change(seed0_entry(body)))
    refused(sub, identity, monkeypatch, message, "results.lbf-8x8-2p-2f.expert.0")


@pytest.mark.parametrize("inside", [False, True])
def test_symlinks_are_refused(inside: bool, make_sub: Callable[..., Path], edit: Edit, identity: DatasetIdentity,
                              monkeypatch: pytest.MonkeyPatch) -> None:  # fmt: skip
    sub = make_sub()
    target = sub / SEED0 if inside else sub.parent / "outside.safetensors"
    if not inside:
        target.write_bytes((sub / SEED0).read_bytes())
        (sub / SEED0).unlink()
    os.symlink(target, sub / "link.safetensors")
    edit(sub, lambda body: seed0_entry(body).update(checkpoint="link.safetensors"))
    refused(sub, identity, monkeypatch, "goes through the symlink 'link.safetensors'")


def test_symlinked_folder_is_refused(make_sub: Callable[..., Path], edit: Edit, identity: DatasetIdentity,
                                     monkeypatch: pytest.MonkeyPatch) -> None:  # fmt: skip
    sub = make_sub()
    outside = sub.parent / "elsewhere"
    outside.mkdir()
    (outside / "w.safetensors").write_bytes((sub / SEED0).read_bytes())
    os.symlink(outside, sub / "linked")
    edit(sub, lambda body: seed0_entry(body).update(checkpoint="linked/w.safetensors"))
    refused(sub, identity, monkeypatch, "goes through the symlink 'linked'")


def test_four_seeds_are_refused(make_sub: Callable[..., Path], edit: Edit, identity: DatasetIdentity,
                                monkeypatch: pytest.MonkeyPatch) -> None:  # fmt: skip
    sub = make_sub()
    edit(sub, lambda body: body["results"][ENV]["expert"].pop("4"))
    refused(sub, identity, monkeypatch, "4 seed(s); at least MIN_SEEDS=5 are required", "train and submit 1 more")


def test_one_run_under_two_seeds_is_refused(make_sub: Callable[..., Path], edit: Edit, identity: DatasetIdentity,
                                            monkeypatch: pytest.MonkeyPatch) -> None:  # fmt: skip
    sub = make_sub()
    edit(sub, lambda body: body["results"][ENV]["expert"]["1"].update(checkpoint=SEED0))
    refused(
        sub, identity, monkeypatch, "same bytes as the checkpoint of submission.json results.lbf-8x8-2p-2f.expert.0"
    )


def test_every_problem_is_collected(make_sub: Callable[..., Path], edit: Edit, identity: DatasetIdentity,
                                    monkeypatch: pytest.MonkeyPatch) -> None:  # fmt: skip
    sub = make_sub()
    (sub / SEED0).write_bytes(pickle.dumps([1, 2, 3]))

    def change(body: dict[str, Any]) -> None:
        body["results"][ENV]["expert"]["1"]["architecture"] = "transformer"
        body["results"][ENV]["expert"].pop("4")
        body["team"] = ""

    edit(sub, change)
    error = refused(sub, identity, monkeypatch, "pickle", "unknown architecture 'transformer'", "4 seed(s)", "'team'")
    assert len(error.problems) == 4


def test_manifest_sha_mismatch_is_refused(make_sub: Callable[..., Path], lbf_dataset: Path,
                                          monkeypatch: pytest.MonkeyPatch) -> None:  # fmt: skip
    sub = make_sub()
    manifest = lbf_dataset / "meta" / "manifest.json"
    manifest.write_text(manifest.read_text() + " ")  # another dataset: its manifest differs
    other = dataset_identity(lbf_dataset)
    refused(sub, other, monkeypatch, f"but the leaderboard dataset is local manifest {other.manifest_sha256}")


def test_local_identity_needs_the_dataset(make_sub: Callable[..., Path], monkeypatch: pytest.MonkeyPatch) -> None:
    refused(make_sub(), None, monkeypatch, "cannot be checked without the dataset", "--dataset DIR")


@pytest.fixture
def hub(hub_server: HubServer, hub_env: Callable[[], dict[str, str]], monkeypatch: pytest.MonkeyPatch) -> HubServer:
    """The local Hub server with one dataset repo, and this process's Hub calls pointed at it."""
    for key, value in hub_env().items():
        monkeypatch.setenv(key, value)
    hub_server.push("llmca/annotated", {"meta/manifest.json": b"{}\n", "README.md": b"# data\n"})
    return hub_server


def test_hub_revision_must_exist(hub: HubServer, make_sub: Callable[..., Path], edit: Edit,
                                 monkeypatch: pytest.MonkeyPatch) -> None:  # fmt: skip
    sub = make_sub()
    edit(sub, lambda body: body.update(dataset={"kind": "hub", "repo_id": "llmca/annotated", "commit": "f" * 40}))
    refused(sub, None, monkeypatch, f"llmca/annotated has no revision '{'f' * 40}'")
    assert hub.calls("GET", f"/api/datasets/llmca/annotated/revision/{'f' * 40}")


def test_hub_repo_must_exist(hub: HubServer, make_sub: Callable[..., Path], edit: Edit,
                             monkeypatch: pytest.MonkeyPatch) -> None:  # fmt: skip
    sub = make_sub()
    edit(sub, lambda body: body.update(dataset={"kind": "hub", "repo_id": "llmca/nothing", "commit": "a" * 40}))
    refused(sub, None, monkeypatch, "dataset repo llmca/nothing not found")


def test_hub_identity_is_checked_and_accepted(hub: HubServer, make_sub: Callable[..., Path], edit: Edit,
                                              monkeypatch: pytest.MonkeyPatch) -> None:  # fmt: skip
    sub = make_sub()
    head = hub.head("llmca/annotated").sha
    expected = dataset_identity("llmca/annotated")  # resolves main → head through HF_ENDPOINT
    assert expected == DatasetIdentity("hub", repo_id="llmca/annotated", commit=head)
    edit(sub, lambda body: body.update(dataset=expected.to_dict()))
    assert validate_submission(sub, expected).submission.dataset == expected
    hub.push("llmca/annotated", {"README.md": b"# newer\n"})  # main moves on: the pinned commit still matches
    assert validate_submission(sub, None).submission.dataset.commit == head
    refused(sub, dataset_identity("llmca/annotated"), monkeypatch, "but the leaderboard dataset is llmca/annotated@")


def test_branch_name_is_not_an_identity(make_sub: Callable[..., Path], edit: Edit, identity: DatasetIdentity,
                                        monkeypatch: pytest.MonkeyPatch) -> None:  # fmt: skip
    sub = make_sub()
    edit(sub, lambda body: body.update(dataset={"kind": "hub", "repo_id": "llmca/annotated", "commit": "main"}))
    refused(sub, identity, monkeypatch, "full 40-hex commit sha (not a branch or tag)")


def test_header_length_with_a_pickle_like_first_byte_is_still_safetensors(tmp_path: Path) -> None:
    from llmca_data.leaderboard.checkpoint import read_header

    header = json.dumps({"a": {**F32, "shape": [2], "data_offsets": [0, 8]}}).encode().ljust(0x180, b" ")
    path = tmp_path / "w.safetensors"
    path.write_bytes(raw_file(header, b"\0" * 8))
    assert path.read_bytes()[0] == 0x80
    parsed, problems = read_header(path)
    assert problems == [] and parsed is not None and parsed.tensors["a"].shape == (2,)
    assert safetensors.torch.load_file(str(path))["a"].shape == (2,)  # the real library agrees
