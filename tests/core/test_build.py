"""`build` renders a card whose configs load with plain `datasets`, and statistics that are right.

The dataset: the shared LBF fixture (12 random + 8 expert episodes) with `uniform` credits on
the expert tier only, so the random steps shard must be padded with NaN credits and the
annotations config has a single split.
"""

from __future__ import annotations

import json
import re
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pytest
import yaml

from llmca_data.annotation.annotate import annotate
from llmca_data.annotation.registry import make_critic
from llmca_data.build import BuildConfig, build, configs_yaml, render_card
from llmca_data.schema import annotations_schema, episodes_schema, from_fsl, steps_schema
from llmca_data.shards import Manifest, read_shard, sha256_file
from llmca_data.validate import validate

ENV = "lbf-8x8-2p-2f"
REPO = "someone/lbf-credits"
EVAL_ROW = {"critic": "uniform", "reference": "uniform", "env_id": ENV, "tier": "all", "sign_agreement": 1.0}


@pytest.fixture(autouse=True)
def _offline(monkeypatch: pytest.MonkeyPatch) -> None:
    """Nothing in this file may reach the network."""
    import datasets.config

    for var in ("HF_DATASETS_OFFLINE", "HF_HUB_OFFLINE"):
        monkeypatch.setenv(var, "1")
        monkeypatch.setattr(datasets.config, var, True)


def annotated_copy(master: Path, dest: Path) -> Path:
    shutil.copytree(master, dest)
    annotate(dest, make_critic("uniform"), tiers=("expert",))
    return dest


@pytest.fixture(scope="module")
def built(lbf_dataset_master: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """One built dataset shared by the read-only tests of this module."""
    root = annotated_copy(lbf_dataset_master, tmp_path_factory.mktemp("built") / "ds")
    calls: list[tuple[int, int]] = []
    result = build(root, BuildConfig(repo_id=REPO), progress=lambda done, total: calls.append((done, total)))
    assert result.padded_shards == [f"data/{ENV}/steps/random-00000.parquet"]
    assert set(result.files) == {"README.md", f"meta/return_hist_{ENV}.png"}
    assert calls and calls[-1][0] == calls[-1][1]
    yield root


def front_matter(root: Path) -> dict[str, Any]:
    text = (root / "README.md").read_text()
    assert text.startswith("---\n")
    meta: dict[str, Any] = yaml.safe_load(text.split("---\n", 2)[1])
    return meta


def shards(root: Path, kind: str, tier: str) -> pa.Table:
    names = Manifest.load(root).shards(ENV, kind, tier)
    return pa.concat_tables([read_shard(root / str(n)) for n in names])


def load(root: Path, config: str, split: str, cache: Path) -> pa.Table:
    import datasets

    ds = datasets.load_dataset(str(root), config, split=split, cache_dir=str(cache))
    table: pa.Table = ds.with_format("arrow")[:]
    return table


def test_front_matter_lists_exactly_the_tiers_with_files(built: Path) -> None:
    meta = front_matter(built)
    assert meta["license"] == "apache-2.0" and meta["task_categories"] == ["reinforcement-learning"]
    assert {"multi-agent", "offline-rl", "credit-assignment", "llm"} <= set(meta["tags"])
    splits = {c["config_name"]: [f["split"] for f in c["data_files"]] for c in meta["configs"]}
    assert splits == {
        ENV: ["expert", "random"],
        f"{ENV}-episodes": ["expert", "random"],
        f"{ENV}-annotations": ["expert"],
    }
    for c in meta["configs"]:
        kind = c["config_name"].removeprefix(ENV).lstrip("-") or "steps"
        assert all(f["path"] == f"data/{ENV}/{kind}/{f['split']}-*.parquet" for f in c["data_files"])
    assert meta["configs"] == configs_yaml(built) == json.loads((built / "meta/info.json").read_text())["configs"]
    assert [c.get("default", False) for c in meta["configs"]] == [True, False, False]


def test_steps_config_loads_the_rows_of_the_shards(built: Path, tmp_path: Path) -> None:
    for tier in ("expert", "random"):
        got, want = load(built, ENV, tier, tmp_path / tier), shards(built, "steps", tier)
        assert got.num_rows == want.num_rows > 0
        for col in ("episode_id", "t", "reward_team"):
            assert got.column(col).to_pylist() == want.column(col).to_pylist(), col
        assert np.array_equal(from_fsl(got.column("obs"), (2, 12)), from_fsl(want.column("obs"), (2, 12)))
        credit = from_fsl(got.column("credit_uniform"), (2,))  # never null, even where padded
        assert got.column("credit_uniform").null_count == 0
        assert np.isnan(credit).all() if tier == "random" else np.isfinite(credit).all()


def test_episodes_and_annotations_configs_load(built: Path, tmp_path: Path) -> None:
    import datasets

    for tier in ("expert", "random"):
        got = load(built, f"{ENV}-episodes", tier, tmp_path / f"e-{tier}")
        assert got.column("episode_id").to_pylist() == shards(built, "episodes", tier).column("episode_id").to_pylist()
    ann = load(built, f"{ENV}-annotations", "expert", tmp_path / "a")
    assert ann.num_rows == 8 and set(ann.column("critic").to_pylist()) == {"uniform"}
    with pytest.raises(ValueError):
        datasets.load_dataset(str(built), f"{ENV}-annotations", split="random", cache_dir=str(tmp_path / "a2"))


def test_statistics_match_a_hand_computation(built: Path) -> None:
    info = json.loads((built / "meta/info.json").read_text())
    assert {"envs", "critics", "versions"} <= set(info)  # what collect/annotate wrote is kept
    assert info["schema_version"] == 1 and info["package_version"] and info["built_at"].endswith("Z")
    stats = info["statistics"]
    rows = {r["tier"]: r for r in stats["tiers"]}
    assert set(rows) == {"expert", "random"} and stats["critics"] == ["uniform"]
    for tier, row in rows.items():
        eps = shards(built, "episodes", tier)
        ret = eps.column("return_team").to_numpy().astype(np.float64)
        assert row["episodes"] == len(ret) == {"expert": 8, "random": 12}[tier]
        assert row["steps"] == shards(built, "steps", tier).num_rows
        assert row["return_mean"] == pytest.approx(ret.mean()) and row["return_std"] == pytest.approx(ret.std())
        assert (row["return_min"], row["return_max"]) == pytest.approx((ret.min(), ret.max()))
        ref = info["envs"][ENV]["reference_returns"]
        expected_score = 100 * (ret.mean() - ref["random"]) / (ref["expert"] - ref["random"])
        assert row["normalized_score"] == pytest.approx(expected_score)
        assert row["success_rate"] == pytest.approx(np.mean(eps.column("success").to_pylist()))
        assert row["cost_mean"] == pytest.approx(from_fsl(eps.column("cost_total"), (2,)).sum(axis=1).mean())
        assert row["coverage"] == {"uniform": 1.0 if tier == "expert" else 0.0}
    assert stats["episodes"] == 20 and stats["steps"] == sum(r["steps"] for r in rows.values())


def test_plot_and_card_are_committed_and_valid(built: Path, tmp_path: Path) -> None:
    manifest = Manifest.load(built)
    png = built / f"meta/return_hist_{ENV}.png"
    assert png.read_bytes().startswith(b"\x89PNG\r\n\x1a\n")
    for rel in ("README.md", f"meta/return_hist_{ENV}.png"):
        assert manifest.files[rel].sha256 == sha256_file(built / rel)
    assert manifest.shards() == sorted(manifest.shards(ENV))  # only data shards
    report = validate(built)
    assert report.ok, report.problems
    assert report.files == len([p for p in manifest.files if p.startswith("data/")]) + 2

    damaged = tmp_path / "ds"
    shutil.copytree(built, damaged)
    (damaged / "README.md").write_text("hand-edited\n")
    png_rel = f"meta/return_hist_{ENV}.png"
    (damaged / png_rel).unlink()
    problems = {p.path: p.message for p in validate(damaged).problems}
    assert set(problems) == {"README.md", png_rel}
    assert "llmca build" in problems["README.md"] and "missing on disk" in problems[png_rel]


def test_second_build_changes_no_file_and_keeps_critic_eval(lbf_dataset: Path) -> None:
    root = lbf_dataset
    annotate(root, make_critic("uniform"), tiers=("expert",))
    first = build(root, critic_eval=[EVAL_ROW])
    hashes = {p: e.sha256 for p, e in Manifest.load(root).files.items()}
    assert any(p.startswith("data/") for p in hashes) and "README.md" in hashes
    second = build(root)  # no rows given: the previous ones still describe the same data
    assert second.files == [] and second.padded_shards == [] and first.padded_shards
    assert {p: e.sha256 for p, e in Manifest.load(root).files.items()} == hashes
    card = (root / "README.md").read_text()
    assert "### Credit quality against a reference" in card and "| uniform | uniform |" in card
    assert second.statistics["critic_eval"]["rows"] == [EVAL_ROW]


def test_card_code_and_schema_match_the_data(built: Path) -> None:
    card = (built / "README.md").read_text()
    assert "{{" not in card
    splits = {c["config_name"]: {f["split"] for f in c["data_files"]} for c in configs_yaml(built)}
    blocks = re.findall(r"```python\n(.*?)```", card, re.S)
    calls = re.findall(r'load_dataset\("([^"]+)", "([^"]+)", split="([^"]+)"\)', "".join(blocks))
    assert {c for _, c, _ in calls} == set(splits)
    for repo, config, split in calls:
        assert repo == REPO and split in splits[config]
    opened = re.findall(r'OfflineDataset.open\("([^"]+)", "([^"]+)", tiers=\["([^"]+)"\]\)', "".join(blocks))
    assert opened == [(REPO, ENV, "expert")]
    assert 'transitions(reward="credit_uniform")' in card
    assert "### Level-Based Foraging" in card and "### Spaceworld" not in card and "### Robotic" not in card
    assert "@inproceedings" in card and "2502.16863" in card
    spec_env = json.loads((built / "meta/info.json").read_text())["envs"][ENV]
    from llmca_data.info import spec_from_info

    spec = spec_from_info(spec_env)
    for schema in (steps_schema(spec, ("uniform",)), episodes_schema(spec), annotations_schema(spec)):
        for f in schema:
            t = f.type
            while pa.types.is_fixed_size_list(t):
                t = t.value_type
            dtype = {"float": "float32"}.get(str(t), str(t))
            assert re.search(rf"\| `{f.name}` \| {dtype} \|", card), f"{f.name} ({dtype}) not documented"


def test_render_card_blocks_and_names() -> None:
    template = "a {{x}}\n{{#on}}\nkept {{x}}\n{{/on}}\n{{#off}}\ndropped\n{{/off}}\nend"
    assert render_card(template, {"x": "1"}, {"on": True, "off": False}) == "a 1\nkept 1\nend"
    with pytest.raises(KeyError):
        render_card("{{missing}}", {}, {})
