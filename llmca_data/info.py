"""``meta/info.json``: what a dataset directory holds and how it was made.

Input: the env specs and tier specs of every collection run. Output: a JSON document with
``schema_version``, package versions, per-env spec and kwargs, the tiers collected with
their policies, and the reference returns used for normalised scores. ``collect`` keeps it
up to date; ``build`` adds statistics.
"""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path
from typing import Any

from llmca_data import SCHEMA_VERSION, __version__
from llmca_data.envs.base import EnvSpec
from llmca_data.errors import SchemaVersionError
from llmca_data.layout import INFO_PATH
from llmca_data.reference import reference_returns
from llmca_data.rollout import package_versions
from llmca_data.shards import write_json_atomic
from llmca_data.tiers import tier_spec


def load_info(root: Path) -> dict[str, Any]:
    """Read ``meta/info.json`` (an empty skeleton when absent) and check its schema version."""
    path = root / INFO_PATH
    if not path.exists():
        return {"schema_version": SCHEMA_VERSION, "envs": {}}
    info: dict[str, Any] = json.loads(path.read_text())
    version = info.get("schema_version")
    if version != SCHEMA_VERSION:
        raise SchemaVersionError(
            f"{root} has schema_version {version}, this llmca-data {__version__} reads {SCHEMA_VERSION}; "
            f"install the llmca-data version recorded in {path} (package_version "
            f"{info.get('package_version', 'unknown')})"
        )
    return info


def spec_to_dict(spec: EnvSpec) -> dict[str, Any]:
    out = asdict(spec)
    out["agent_ids"] = list(spec.agent_ids)
    return out


def spec_from_info(env: dict[str, Any]) -> EnvSpec:
    """Rebuild an ``EnvSpec`` from its ``meta/info.json`` entry (no env package needed)."""
    raw = dict(env["spec"])
    raw.pop("agent_ids", None)
    for key in ("action_names", "obs_features", "state_features"):
        raw[key] = tuple(raw[key])
    return EnvSpec(**raw)


def record_collection(root: Path, spec: EnvSpec, tier: str, policy_ids: list[str]) -> dict[str, Any]:
    """Add one env/tier collection to ``meta/info.json`` (atomically) and return the document."""
    info = load_info(root)
    env = info["envs"].setdefault(spec.env_id, {})
    if env.get("spec", {}).get("kwargs", spec.kwargs) != spec.kwargs:
        raise ValueError(
            f"{root} already holds {spec.env_id} built with kwargs {env['spec']['kwargs']}, not {spec.kwargs}; "
            "collect other env kwargs into another directory"
        )
    env["spec"] = spec_to_dict(spec)
    env["reference_returns"] = reference_returns(spec.env_id)
    tiers = env.setdefault("tiers", {})
    entry = tiers.setdefault(tier, {**tier_spec(tier).to_dict(), "policy_ids": []})
    entry["policy_ids"] = sorted(set(entry["policy_ids"]) | set(policy_ids))
    info.update(schema_version=SCHEMA_VERSION, package_version=__version__, versions=package_versions())
    write_json_atomic(root / INFO_PATH, info)
    return info


def record_recipe(root: Path, recipe: dict[str, Any]) -> dict[str, Any]:
    """Record the resolved recipe that built the dataset in ``meta/info.json`` (atomically)."""
    info = load_info(root)
    info["recipe"] = recipe
    write_json_atomic(root / INFO_PATH, info)
    return info
