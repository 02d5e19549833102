"""Env ids: the parser and its inverse."""

import pytest
from hypothesis import given
from hypothesis import strategies as st

from llmca_data.envs.ids import CONTRACT_ENV_IDS, EnvId
from llmca_data.errors import UnknownEnvError


@pytest.mark.parametrize("env_id", CONTRACT_ENV_IDS)
def test_contract_ids_round_trip(env_id: str) -> None:
    assert str(EnvId.parse(env_id)) == env_id


def test_gym_ids() -> None:
    assert EnvId.parse("lbf-8x8-2p-2f-coop").gym_id == "Foraging-8x8-2p-2f-coop-v3"
    assert EnvId.parse("rware-small-4ag").gym_id == "rware-small-4ag-v2"
    assert EnvId.parse("spaceworld-10x10-3a").gym_id is None


@given(st.integers(5, 20), st.integers(5, 20), st.integers(1, 9), st.integers(1, 9), st.booleans())
def test_lbf_grammar_round_trip(w: int, h: int, p: int, f: int, coop: bool) -> None:
    env_id = f"lbf-{w}x{h}-{p}p-{f}f" + ("-coop" if coop else "")
    parsed = EnvId.parse(env_id)
    assert (parsed.width, parsed.height, parsed.n_agents, parsed.n_food, parsed.coop) == (w, h, p, f, coop)
    assert str(parsed) == env_id


@pytest.mark.parametrize(
    "bad", ["", "lbf", "lbf-8x8-2p", "rware-huge-2ag", "Foraging-8x8-2p-2f-v3", "spaceworld-10-3a"]
)
def test_bad_ids_name_the_valid_ones(bad: str) -> None:
    with pytest.raises(UnknownEnvError, match="lbf-8x8-2p-2f"):
        EnvId.parse(bad)
