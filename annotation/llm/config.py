"""``LLMConfig``: every option of the LLM critics, declared once.

Input: settings (CLI options, a recipe, an online run's config). Output: a frozen, validated
config that ``LLMCritic`` turns into requests; it is saved with every annotation (``params``)
and nested, not copied, in ``CriticOptions`` and ``OnlineConfig``. Importing this module
imports no LLM client, so registries and recipe checks stay cheap.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from llmca_data.config import ConfigError, JsonConfig, bounded

RESPONSE_FORMATS = ("grammar", "json_object", "json_schema", "vllm", "none")
TEAM_REWARDS = ("true", "delayed", "noisy")
LOCAL_MODELS = ("smollm2-135m", "gemma3-270m")
"""The embedded server's models (``server.EMBEDDED_MODELS`` says how each is found and served)."""
DEFAULT_LOCAL_MODEL = LOCAL_MODELS[0]
TRANSPORTS = ("interactive", "batch")
"""How requests travel: one HTTP request each, or the OpenAI Batch API (``batch``)."""
BATCH_DISCOUNT = 0.5
"""The Batch API's price relative to interactive requests (OpenAI: half)."""
SHARES_CRITICS = ("llm-mca-shares", "llm-taca-shares", "llm-mca-temporal")
"""The shares form (DESIGN §5): integer percent shares of each rewarded step, compact lines."""
LLM_CRITICS = ("llm-mca", "llm-taca", *SHARES_CRITICS)
"""The dense form (one number per agent and step, the paper's) and the shares form."""


@dataclass(frozen=True)
class TransportConfig(JsonConfig):
    """How requests travel: timeouts, retries, concurrency and prices (declared once, nested in
    ``LLMConfig`` and in the HTTP client's ``ClientConfig``)."""

    timeout_s: float = bounded(300.0, 0.0, None, open_low=True)
    """Seconds per HTTP attempt, end to end (connect to the last byte of the reply), so a server that
    sends one byte at a time is cut off too (the small local model on a busy 2-core machine can need
    minutes)."""
    max_retries: int = bounded(4, 0, None)
    """Retries after the first attempt (so at most ``max_retries + 1`` requests)."""
    backoff_s: float = bounded(1.0, 0.0, None)
    """First retry wait; the k-th retry waits ``min(max_backoff_s, backoff_s * 2**k)`` plus jitter
    (``Retry-After`` wins when the server sends it)."""
    max_backoff_s: float = bounded(30.0, 0.0, None)
    """Cap on one wait, ``Retry-After`` included."""
    total_retry_s: float = bounded(300.0, 0.0, None)
    """Cap on the total time of one request with its retries; no wait may cross it."""
    concurrency: int = bounded(1, 1, None)
    """Requests in flight at once (1 for the local llama.cpp server)."""
    max_response_bytes: int = bounded(4 * 2**20, 1024, None)
    """Most bytes read from one HTTP response body; a larger one is refused while it is read (a
    critic's reply is a few kB; 4 MiB leaves room for 2000-step windows of many agents)."""
    price_in: float = bounded(0.0, 0.0, None)
    """USD per 1M prompt tokens, for the cost estimate."""
    price_out: float = bounded(0.0, 0.0, None)
    """USD per 1M completion tokens, for the cost estimate."""
    mode: str = "interactive"
    """``interactive`` (one chat-completions request each) or ``batch`` (the OpenAI Batch API: files of
    requests, half the price, results within 24 h; ``annotation.llm.batch``)."""
    batch_poll_s: float = bounded(30.0, 0.0, None)
    """Batch mode: the first wait between polls of a batch; each wait is 1.5× the last, up to 600 s."""
    batch_max_requests: int = bounded(50_000, 1, 50_000)
    """Batch mode: most requests in one input file (the API's limit is 50,000)."""
    batch_max_bytes: int = bounded(200 * 2**20, 4096, 200 * 2**20)
    """Batch mode: most bytes in one input file (the API's limit is 200 MB)."""

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.mode not in TRANSPORTS:
            raise ConfigError(f"--transport must be one of {', '.join(TRANSPORTS)}, got {self.mode!r}")

    def cost_usd(self, tokens_in: int, tokens_out: int) -> float:
        """The estimated cost of these tokens at the configured prices (batch prices in batch mode)."""
        discount = BATCH_DISCOUNT if self.mode == "batch" else 1.0
        return discount * (tokens_in * self.price_in + tokens_out * self.price_out) / 1e6


@dataclass(frozen=True)
class LLMConfig(JsonConfig):
    """Everything that determines the LLM critic's requests (saved with every annotation)."""

    critic: str = "llm-mca"
    """``llm-mca`` (credits) or ``llm-taca`` (credits and one task per agent per step), or a shares
    form critic (``llm-mca-shares``, ``llm-taca-shares``, ``llm-mca-temporal``); the critic registry
    sets it from the critic id asked for."""
    base_url: str = ""
    """An OpenAI-compatible endpoint, or several separated by commas (the same model served on each,
    e.g. one vLLM server per GPU: requests are spread round-robin); empty starts the embedded
    llama.cpp server."""
    model: str = ""
    """The model name sent with requests; empty = the embedded server's alias."""
    local_model: str = DEFAULT_LOCAL_MODEL
    """The embedded server's model (one of ``LOCAL_MODELS``), only without ``base_url``:
    ``smollm2-135m`` (the default, in the local-llm extra) or ``gemma3-270m`` (the gemma extra)."""
    response_format: str = "grammar"
    """grammar (llama.cpp GBNF), json_object (+schema, llama-cpp-python), json_schema (OpenAI), vllm
    (the JSON schema as vLLM's ``structured_outputs``), none."""
    temperature: float = bounded(0.0, 0.0, 2.0)
    max_tokens: int = bounded(0, 0, None)
    """0 scales the budget with T × N."""
    episodes_per_prompt: int = bounded(1, 1, None)
    max_window: int = bounded(30, 2, None)
    """Most timesteps in one request; longer episodes are split into windows."""
    team_reward: str = "true"
    """true, or a stress variant: delayed (all reward at the last step) or noisy (+ Gaussian noise)."""
    noise_std: float = bounded(0.0, 0.0, None)
    noise_seed: int = bounded(0, 0, None)
    max_cost: float = bounded(0.0, 0.0, None)
    """USD budget for this run (0 = unlimited); needs prices (``transport``) to mean anything."""
    transport: TransportConfig = field(default_factory=TransportConfig)
    """Timeouts, retries, concurrency and prices of the requests."""
    seed: int = bounded(0, 0, None)

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.critic not in LLM_CRITICS:
            raise ConfigError(f"the LLM critic must be one of {', '.join(LLM_CRITICS)}, got {self.critic!r}")
        if self.response_format not in RESPONSE_FORMATS:
            raise ConfigError(
                f"--response-format must be one of {', '.join(RESPONSE_FORMATS)}, got {self.response_format!r}"
            )
        if self.local_model not in LOCAL_MODELS:
            raise ConfigError(f"--local-model must be one of {', '.join(LOCAL_MODELS)}, got {self.local_model!r}")
        if self.base_url and self.local_model != DEFAULT_LOCAL_MODEL:
            raise ConfigError(f"--local-model {self.local_model} picks the embedded server's model; with "
                              "--base-url no embedded server runs: drop one of them")  # fmt: skip
        if self.team_reward not in TEAM_REWARDS:
            raise ConfigError(f"--team-reward must be one of {', '.join(TEAM_REWARDS)}, got {self.team_reward!r}")
        if self.shares and self.team_reward == "noisy":
            raise ConfigError(f"{self.critic} asks only about rewarded steps; --team-reward noisy makes every step "
                              "rewarded: use llm-mca or llm-taca for the noisy variant")  # fmt: skip
        if any(not url.startswith(("http://", "https://")) for url in self.base_urls):
            raise ConfigError(f"--base-url takes http(s) URLs separated by commas, got {self.base_url!r}")
        if self.transport.mode == "batch" and len(self.base_urls) > 1:
            raise ConfigError("--transport batch sends its files to one endpoint: give one --base-url")
        if self.transport.mode == "batch" and not self.base_url:
            raise ConfigError("--transport batch sends files of requests to an endpoint with the Batch API: give "
                              "--base-url (e.g. https://api.openai.com/v1) and --model")  # fmt: skip
        if self.shares and self.episodes_per_prompt > 1:
            raise ConfigError(f"{self.critic} sends one episode (window) per request: use --episodes-per-prompt 1")

    @property
    def base_urls(self) -> tuple[str, ...]:
        """The endpoints of ``base_url`` (empty: the embedded server)."""
        return tuple(u.strip() for u in self.base_url.split(",") if u.strip())

    @property
    def critic_id(self) -> str:
        return self.critic if self.team_reward == "true" else f"{self.critic}-{self.team_reward}"

    @property
    def with_tasks(self) -> bool:
        return self.critic in ("llm-taca", "llm-taca-shares")

    @property
    def shares(self) -> bool:
        """The shares form: percent shares of each rewarded step (DESIGN §5), not one number per step."""
        return self.critic in SHARES_CRITICS

    @property
    def enablers(self) -> bool:
        """``llm-mca-temporal``: each reward also names the earlier steps that enabled it."""
        return self.critic == "llm-mca-temporal"
