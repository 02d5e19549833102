"""The dataset card: the ``configs:`` YAML and README.md rendered from ``DATASET_CARD.md``.

Input: a dataset directory's manifest and ``meta/info.json`` (statistics written by
``build``). Output: the card's text. ``{{name}}`` in the template is a value and
``{{#flag}}…{{/flag}}`` an optional block; single braces are left alone.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Callable, Mapping
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

import llmca_data
from llmca_data import SCHEMA_VERSION, __version__
from llmca_data.dataset import Dataset
from llmca_data.envs.ids import EnvId
from llmca_data.errors import LlmcaError
from llmca_data.info import critic_columns, spec_from_info
from llmca_data.layout import RETURN_HIST_PATH
from llmca_data.schema import ANNOTATION_STATUSES, credit_column, critic_of_column
from llmca_data.shards import Manifest, read_shard
from llmca_data.tiers import tier_sort_key

log = logging.getLogger(__name__)

Progress = Callable[[int, int], None]
"""``progress(stages_done, stages_total)``."""


def critic_fields(root: Path, manifest: Manifest, env_id: str | None = None) -> dict[str, pa.Field]:
    """The ``credit_*`` and ``task_*`` fields of the committed steps shards (of one env or all), by name."""
    return Dataset(root, manifest).critic_fields(env_id)


def yaml_configs(configs: list[dict[str, Any]]) -> str:
    lines = []
    for c in configs:
        lines.append(f"- config_name: {json.dumps(c['config_name'])}")
        if c.get("default"):
            lines.append("  default: true")
        lines.append("  data_files:")
        for f in c["data_files"]:
            lines += [f"  - split: {json.dumps(f['split'])}", f"    path: {json.dumps(f['path'])}"]
    return "\n".join(lines)


def card_template() -> str:
    """The text of ``DATASET_CARD.md``: next to the package in a source checkout, else package data."""
    source = Path(llmca_data.__file__).resolve().parents[1] / "DATASET_CARD.md"
    if source.is_file():
        return source.read_text(encoding="utf-8")
    try:
        return (resources.files("llmca_data") / "templates" / "DATASET_CARD.md").read_text(encoding="utf-8")
    except (FileNotFoundError, ModuleNotFoundError) as exc:
        raise LlmcaError(
            f"DATASET_CARD.md is neither at {source} nor packaged as llmca_data/templates/DATASET_CARD.md; "
            "reinstall llmca-data"
        ) from exc


_BLOCK = re.compile(r"\{\{#(\w+)\}\}\n?(.*?)\{\{/\1\}\}\n?", re.S)
_VAR = re.compile(r"\{\{(\w+)\}\}")


def render_card(template: str, values: Mapping[str, str], flags: Mapping[str, bool]) -> str:
    """Fill ``{{name}}`` from ``values`` and keep ``{{#flag}}...{{/flag}}`` blocks whose flag is true.

    Raises:
        KeyError: the template uses a name or flag that is not given (a template/code mismatch).
    """
    kept = _BLOCK.sub(lambda m: m[2] if flags[m[1]] else "", template)
    return _VAR.sub(lambda m: values[m[1]], kept)


def _row(cells: list[object]) -> str:
    """One markdown table row (``|`` inside a cell is escaped)."""
    return "| " + " | ".join(str(c).replace("|", "\\|") for c in cells) + " |"


def _num(x: float | None, fmt: str = ".3f") -> str:
    return "—" if x is None or not np.isfinite(x) else format(x, fmt)


def _stat_row(r: dict[str, Any]) -> str:
    returns = [f"{_num(r['return_mean'])} ± {_num(r['return_std'])}", _num(r["return_min"]), _num(r["return_max"])]
    coverage = ", ".join(f"{c} {v:.2f}" for c, v in r["coverage"].items()) or "—"
    scores = [_num(r["normalized_score"], ".1f"), _num(r["cost_mean"]), _num(r["success_rate"]), coverage]
    return _row([f"`{r['env_id']}`", r["tier"], r["episodes"], r["steps"], *returns, *scores])


def _size_category(rows: int) -> str:
    """The Hub's ``size_categories`` label for ``rows`` rows (steps)."""
    labels = ["1K", "10K", "100K", "1M", "10M", "100M", "1B"]
    for k, label in enumerate(labels):
        if rows < 10 ** (3 + k):
            return f"n<{label}" if k == 0 else f"{labels[k - 1]}<n<{label}"
    return "n>1B"


def card_values(
    root: Path, manifest: Manifest, info: dict[str, Any], stats: dict[str, Any], configs: list[dict[str, Any]]
) -> tuple[dict[str, str], dict[str, bool]]:
    """Everything the card template needs that depends on the data, as strings and flags."""
    rows, envs = stats["tiers"], sorted({r["env_id"] for r in stats["tiers"]})
    env_rows, features, tier_rows, refs, hists = [], [], [], [], []
    for e in envs:
        s, family = spec_from_info(info["envs"][e]), EnvId.parse(e).family
        legend = ", ".join(f"{i}: {a}" for i, a in enumerate(s.action_names))
        env_rows.append(_row([f"`{e}`", s.n_agents, s.n_actions, s.obs_dim, s.state_dim, s.max_steps, legend]))
        obs, state = (", ".join(f"`{x}`" for x in names) for names in (s.obs_features, s.state_features))
        features.append(
            f"<details><summary><code>{e}</code></summary>\n\nobs ({s.obs_dim} per agent): {obs}\n\n"
            f"state ({s.state_dim}): {state}\n\n</details>"
        )
        ref = info["envs"][e].get("reference_returns") or {}
        refs.append(_row([f"`{e}`", _num(ref.get("random")), _num(ref.get("expert")), ref.get("version", "—")]))
        hists.append(f"![Team return per episode in {e}]({RETURN_HIST_PATH.format(env_id=e)})")
        for r in (r for r in rows if r["env_id"] == e):
            t = info["envs"][e].get("tiers", {}).get(r["tier"], {})
            eps = t.get("family_epsilon", {}).get(family, t.get("epsilon"))
            eps_text = "U(0, 1) per episode" if eps is None else f"{eps:g}"
            pols = ", ".join(f"`{p}`" for p in t.get("policy_ids", []))
            tier_rows.append(_row([f"`{e}`", r["tier"], eps_text, pols, t.get("description", "")]))
    stat_rows = [_stat_row(r) for r in rows]
    metrics = ("sign_agreement", "top_agent_accuracy", "spearman", "mae_scaled", "episode_total_pearson", "coverage")
    eval_rows = [
        _row(
            [r.get("critic", "—"), r.get("reference", "—"), r.get("env_id"), r.get("tier")]
            + [_num(r.get(k)) for k in metrics]
        )
        for r in stats.get("critic_eval", {}).get("rows", [])
    ]
    extra_rows = []
    for f in critic_fields(root, manifest).values():
        text = "the task (target index) LLM-TACA assigned each agent, −1 for none"
        if f.name.startswith("credit_"):
            text = f"credits of critic `{critic_of_column(f.name, critic_columns(info))}` (NaN where missing)"
        extra_rows.append(_row([f"`{f.name}`", np.dtype(f.type.value_type.to_pandas_dtype()).name, "[N]", text]))
    steps_cfg = next(c for c in configs if c["config_name"] in envs)
    ann_cfg = next((c for c in configs if c["config_name"].endswith("-annotations")), None)
    values = {
        "size_category": _size_category(int(stats["steps"])),
        "configs": yaml_configs(configs),
        "total_episodes": str(stats["episodes"]),
        "total_steps": str(stats["steps"]),
        "env_list": ", ".join(f"`{e}`" for e in envs),
        "tier_list": ", ".join(sorted({r["tier"] for r in rows}, key=tier_sort_key)),
        "critic_list": ", ".join(f"`{c}`" for c in stats["critics"]) or "no critic yet",
        "schema_version": str(SCHEMA_VERSION),
        "package_version": __version__,
        "env_table": "\n".join(env_rows),
        "feature_details": "\n\n".join(features),
        "tier_table": "\n".join(tier_rows),
        "critic_table": "\n".join(critic_rows(root, manifest, info, stats["critics"])) or _row(["—"] * 6),
        "critic_eval_table": "\n".join(eval_rows),
        "critic_columns": "\n".join(extra_rows),
        "statistics_table": "\n".join(stat_rows),
        "reference_table": "\n".join(refs),
        "histograms": "\n\n".join(hists),
        "example_env": steps_cfg["config_name"],
        "example_tier": steps_cfg["data_files"][0]["split"],
        "example_reward": next(iter(critic_fields(root, manifest, steps_cfg["config_name"])), "team"),
        "example_annotations_env": ann_cfg["config_name"].removesuffix("-annotations") if ann_cfg else "",
        "example_annotations_tier": ann_cfg["data_files"][0]["split"] if ann_cfg else "",
    }
    flags = {f"has_{f}": any(EnvId.parse(e).family == f for e in envs) for f in ("lbf", "rware", "spaceworld")}
    flags.update(has_critic_eval=bool(eval_rows), has_annotations=ann_cfg is not None)
    return values, flags


def critic_rows(root: Path, manifest: Manifest, info: dict[str, Any], critics: list[str]) -> list[str]:
    """One card row per critic: column, type, models, prompt versions and status counts."""
    seen: dict[str, tuple[set[str], set[str], dict[str, int]]] = {c: (set(), set(), {}) for c in critics}
    for n in manifest.shards(kind="annotations"):
        for row in read_shard(root / str(n), ["critic", "model", "prompt_version", "status"]).to_pylist():
            models, prompts, status = seen.setdefault(row["critic"], (set(), set(), {}))
            models.add(row["model"])
            prompts.add(row["prompt_version"])
            status[row["status"]] = status.get(row["status"], 0) + 1
    out = []
    for cid, (models, prompts, status) in sorted(seen.items()):
        kind = info.get("critics", {}).get(cid, {}).get("params", {}).get("type", "—")
        model_text, prompt_text = (", ".join(f"`{x}`" for x in sorted(v) if x) or "—" for v in (models, prompts))
        counts = " / ".join(str(status.get(k, 0)) for k in ANNOTATION_STATUSES)
        out.append(_row([f"`{cid}`", f"`{credit_column(cid)}`", kind, model_text, prompt_text, counts]))
    return out
