"""Chat formats that our embedded llama.cpp server registers with llama-cpp-python.

Input: the chat messages of a request. Output: the prompt text the model continues.

``llmca-gemma`` is Gemma's turn format (``<start_of_turn>user\\n… <end_of_turn>\\n`` …
``<start_of_turn>model\\n``) with the system message at the head of the first user turn, as
Gemma's own chat template puts it. llama-cpp-python's ``gemma`` format drops system messages
(Gemma has no system role), and our critic's instructions are the system message, so it would
send the model the episode without the rules. ``register()`` runs in the server's child process
(``server._CHILD``), before ``llama_cpp.server`` resolves ``--chat_format``.
"""

from __future__ import annotations

from typing import Any

GEMMA = "llmca-gemma"
GEMMA_END = "<end_of_turn>"


def gemma_prompt(messages: list[dict[str, Any]]) -> str:
    """Gemma turns for ``messages``: the system message(s) open the first user turn; ends with the model's turn."""
    system = "\n\n".join(str(m["content"]).strip() for m in messages if m["role"] == "system" and m["content"])
    out = []
    for message in messages:
        if message["role"] == "system":
            continue
        role = "model" if message["role"] == "assistant" else "user"
        text = str(message["content"] or "").strip()
        if system and role == "user":
            text, system = f"{system}\n\n{text}", ""
        out.append(f"<start_of_turn>{role}\n{text}{GEMMA_END}\n")
    if system:  # no user turn at all: the instructions alone
        out.insert(0, f"<start_of_turn>user\n{system}{GEMMA_END}\n")
    return "".join(out) + "<start_of_turn>model\n"


def register() -> None:
    """Register ``GEMMA`` with llama-cpp-python (idempotent; needs the local-llm extra)."""
    from llama_cpp import llama_chat_format as formats

    def gemma(messages: list[Any], **kwargs: Any) -> Any:
        return formats.ChatFormatterResponse(prompt=gemma_prompt(messages), stop=GEMMA_END)

    handler = formats.chat_formatter_to_chat_completion_handler(gemma)
    registry = formats.LlamaChatCompletionHandlerRegistry()  # type: ignore[no-untyped-call]  # a singleton
    registry.register_chat_completion_handler(GEMMA, handler, overwrite=True)
