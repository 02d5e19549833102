"""The LLM critic: LLM-MCA (credits) and LLM-TACA (credits and tasks), batched and cached.

Input: stored episodes (replayed to get the env's ``describe()`` before every step) and an
``LLMConfig``. Output: one ``CriticOutput`` per episode: credits ``[T, N]`` (NaN when the
episode failed), tasks ``[T, N]`` for TACA, a rationale per agent, a summary, tokens,
latency, cost and the raw replies.

Each request is keyed by (model, prompt version, sampling parameters, messages) and looked
up in the ``ReplyCache`` first; the embedded llama.cpp server is started only when some
request is not cached. A reply that fails validation gets one corrective retry quoting the
error; an episode whose reply is still invalid, or whose request failed after our retries,
gets status ``failed`` and NaN credits (so does a malformed or oversized response, and any other
error of one exchange: the run goes on). The retry quotes at most ``reply.QUOTE_MAX_CHARS`` of the
invalid reply, so a huge reply is never sent back. Long episodes are split into windows of at most
``max_window`` steps; ``episodes_per_prompt`` > 1 puts several single-window episodes in one
prompt (batch mode). ``max_cost`` stops sending once the next request could pass the budget.
With ``transport.mode`` ``batch`` requests go through the OpenAI Batch API instead (``batch``).
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from llmca_data.envs.base import MultiAgentEnv
from llmca_data.errors import ReplayMismatchError
from llmca_data.rollout import Episode

from ..critic import CriticOutput
from ..evidence import episode_events, evidence_text, replay_describes
from .batch import BatchRunner, run_rounds
from .cache import CachedReply, ReplyCache, request_key
from .client import ClientConfig, LLMClient, LLMRequestError
from .compact import render_compact
from .config import LLMConfig
from .prompt import (
    build_messages,
    displayed_rewards,
    estimate_tokens,
    max_tokens_for,
    n_task_targets,
    prompt_version,
    render_episode,
    windows,
)
from .reply import ReplyError, parse_reply, quote, reply_grammar, reply_json_schema
from .server import LocalLLMServer, server_config
from .shares import (
    SharesQuery,
    max_tokens_shares,
    needs_request,
    parse_shares,
    shares_credits,
    shares_cue,
    shares_grammar,
    shares_json_schema,
    shares_query,
)

log = logging.getLogger(__name__)


@dataclass
class _Item:
    episode: Episode
    t0: int
    t1: int
    first: dict[str, Any]
    """``describe()`` at the episode's start (object counts for TACA's task range)."""
    rendered: Any = None
    query: SharesQuery | None = None
    """The shares form: what this window asks (None for the dense form)."""


@dataclass
class _Request:
    env_id: str
    items: list[_Item]
    messages: list[dict[str, str]]
    max_tokens: int
    options: dict[str, Any]
    key: str
    prompt_version: str
    n_tasks: int | None
    result: dict[int, Any] = field(default_factory=dict)


class LLMCritic:
    """The ``Critic`` for every ``llm-*`` id (dense and shares form, and their stress variants)."""

    needs_env = True

    def __init__(self, config: LLMConfig, cache: ReplyCache | None = None) -> None:
        self.config = config
        self.critic_id = config.critic_id
        self.cache = cache if cache is not None else ReplyCache()
        self._server: LocalLLMServer | None = None
        self._embedded = None if config.base_url else LocalLLMServer(server_config(config.local_model))
        self.model = config.model or (self._embedded.model if self._embedded else "")
        if not self.model:
            raise ValueError("--model is required with --base-url")
        self.spent_usd = 0.0
        self.requests_sent = 0
        self.batch_runner: BatchRunner | None = None
        """Set by ``batch.run_rounds``: uncached requests are deferred to it, never sent one by one."""

    def params(self) -> dict[str, Any]:
        out: dict[str, Any] = {"type": "llm", **asdict(self.config), "model": self.model}
        out["base_url"] = self.config.base_url or "embedded"
        if self._embedded is not None:
            out["server"] = self._embedded.provenance()
        return out

    # ------------------------------------------------------------------ planning

    def plan(self, episodes: list[Episode], env: MultiAgentEnv) -> tuple[list[_Request], dict[int, str]]:
        """Render every request for ``episodes``; episodes that cannot be replayed are returned as errors."""
        cfg, spec = self.config, env.spec
        errors: dict[int, str] = {}
        single: list[_Item] = []
        requests: list[_Request] = []
        for episode in episodes:
            try:
                describes = replay_describes(episode, env)  # [T + 1]: the last after the final step
            except ReplayMismatchError as exc:
                errors[episode.episode_id] = str(exc)
                continue
            reward = episode.reward_team  # [T]
            shown = displayed_rewards(reward, cfg.team_reward, noise_std=cfg.noise_std, noise_seed=cfg.noise_seed,
                                      episode_id=episode.episode_id)  # fmt: skip  # [T]
            events: list[str] | None = None
            if cfg.shares:  # the evidence of every step with an event or a shown reward
                found = episode_events(spec.env_id, describes, episode.action)
                events = [evidence_text(e) if e or abs(r) > 0 else "" for e, r in zip(found, shown, strict=True)]
            spans = windows(episode.length, cfg.max_window)
            for t0, t1 in spans:
                item = _Item(episode, t0, t1, describes[0])
                if events is None:
                    item.rendered = render_episode(
                        spec.env_id, describes[t0:t1], episode.action[t0:t1], reward[t0:t1],
                        episode_id=episode.episode_id, t0=t0, team_reward=cfg.team_reward, noise_std=cfg.noise_std,
                        noise_seed=cfg.noise_seed, reward_episode=reward,
                    )  # fmt: skip
                else:
                    item.rendered = render_compact(spec.env_id, describes[t0:t1], episode.action[t0:t1], shown[t0:t1],
                                                   events[t0:t1], episode_id=episode.episode_id, t0=t0)  # fmt: skip
                    item.query = shares_query(
                        episode.episode_id, t0, shown[t0:t1], with_tasks=cfg.with_tasks, enablers=cfg.enablers,
                        n_tasks=n_task_targets(describes[0]) if cfg.with_tasks else None,
                    )  # fmt: skip
                if len(spans) == 1 and cfg.episodes_per_prompt > 1:
                    single.append(item)
                else:
                    requests.append(self._request(spec.env_id, spec.agent_ids, [item]))
        for k in range(0, len(single), cfg.episodes_per_prompt):
            requests.append(self._request(spec.env_id, spec.agent_ids, single[k : k + cfg.episodes_per_prompt]))
        return requests, errors

    def _request(self, env_id: str, agent_ids: tuple[str, ...], items: list[_Item]) -> _Request:
        cfg = self.config
        n_tasks = n_task_targets(items[0].first) if cfg.with_tasks else None
        version = prompt_version(env_id, cfg.critic)
        query = items[0].query
        if query is not None and not needs_request(query):  # nothing to ask: answered without the model
            return _Request(env_id, items, [], 0, {}, "", version, n_tasks)
        cue = None if query is None else shares_cue(query, agent_ids)
        messages = build_messages(env_id, cfg.critic, [i.rendered for i in items], agent_ids, n_tasks, cue=cue)
        spans = [(i.episode.episode_id, i.t1 - i.t0) for i in items]
        if query is not None:
            max_tokens = cfg.max_tokens or max_tokens_shares(query, len(agent_ids))
        else:
            max_tokens = cfg.max_tokens or max_tokens_for(len(agent_ids), [n for _, n in spans], cfg.with_tasks)
        options = self._constraint(query, agent_ids, spans, n_tasks)
        sampling = {"temperature": cfg.temperature, "max_tokens": max_tokens, "seed": cfg.seed, **options}
        key = request_key(self.model, version, sampling, messages)
        return _Request(env_id, items, messages, max_tokens, options, key, version, n_tasks)

    def _constraint(
        self, query: SharesQuery | None, agent_ids: tuple[str, ...], spans: list[tuple[int, int]], n_tasks: int | None
    ) -> dict[str, Any]:
        """The request options that constrain the reply as ``response_format`` says (only that one is built)."""
        fmt, with_tasks = self.config.response_format, self.config.with_tasks
        if fmt == "grammar":
            grammar = (shares_grammar(query, agent_ids) if query is not None
                       else reply_grammar(agent_ids, spans, with_tasks, n_tasks))  # fmt: skip
            return {"extra_body": {"grammar": grammar}}
        if fmt not in ("json_object", "json_schema", "vllm"):
            return {}
        schema = (shares_json_schema(query, agent_ids) if query is not None
                  else reply_json_schema(agent_ids, spans, with_tasks, n_tasks))  # fmt: skip
        if fmt == "json_object":
            return {"response_format": {"type": "json_object", "schema": schema}}
        if fmt == "vllm":  # vLLM's own structured-output field (it replaced ``guided_json`` in v0.12)
            return {"extra_body": {"structured_outputs": {"json": schema}}}
        return {"response_format": {"type": "json_schema",
                                    "json_schema": {"name": "credits", "schema": schema, "strict": True}}}  # fmt: skip

    def estimate(self, requests: list[_Request]) -> dict[str, float]:
        """Requests, prompt tokens (estimated), cached requests and the cost estimate of ``requests``."""
        requests = [r for r in requests if r.messages]  # windows the shares form answers without the model
        tokens_in = sum(estimate_tokens("".join(m["content"] for m in r.messages)) for r in requests)
        tokens_out = sum(r.max_tokens for r in requests)
        cached = sum(self.cache.get(r.key) is not None for r in requests)
        cost = self.config.transport.cost_usd(tokens_in, tokens_out)
        return {"requests": len(requests), "cached": cached, "prompt_tokens": tokens_in,
                "max_output_tokens": tokens_out, "estimated_cost_usd": cost}  # fmt: skip

    # ------------------------------------------------------------------ running

    def annotate(self, episode: Episode, env: MultiAgentEnv | None) -> CriticOutput:
        return self.annotate_batch([episode], env)[0]

    def annotate_batch(self, episodes: list[Episode], env: MultiAgentEnv | None) -> list[CriticOutput]:
        assert env is not None, "the LLM critic replays episodes to describe them: pass an env"
        requests, errors = self.plan(episodes, env)
        if any(r.messages and self.cache.get(r.key) is None for r in requests):
            self._ensure_server()
        if self.config.transport.mode == "batch":
            run_rounds(self, requests)
        else:
            asyncio.run(self._run_all(requests))
        return [self._assemble(e, env.spec.n_agents, requests, errors) for e in episodes]

    def _ensure_server(self) -> None:
        if self._embedded is not None and self._server is None:
            self._embedded.start()
            self._server = self._embedded

    def close(self) -> None:
        """Stop the embedded server, if this critic started one."""
        if self._server is not None:
            self._server.stop()
            self._server = None
        if self.batch_runner is not None:
            self.batch_runner.close()

    async def _run_all(self, requests: list[_Request]) -> None:
        """Every request, spread round-robin over the endpoints (each with its own concurrency)."""
        urls = self.config.base_urls or ((self._embedded.base_url,) if self._embedded else ())
        clients = [LLMClient(ClientConfig(base_url=u, model=self.model, transport=self.config.transport)) for u in urls]
        try:
            await asyncio.gather(*(self._run(clients[k % len(clients)], r) for k, r in enumerate(requests)))
        finally:
            for client in clients:
                await client.aclose()

    async def _ask(
        self, client: LLMClient, request: _Request, messages: list[dict[str, str]]
    ) -> tuple[CachedReply, str | None]:
        """One completion for ``messages``: from the cache (key None), else from the server (with its cache key).

        The caller caches fresh replies only once the exchange ends in a valid reply, so a rerun
        asks again for episodes that failed but never re-sends a request that succeeded.
        """
        sampling = {"temperature": self.config.temperature, "max_tokens": request.max_tokens, "seed": self.config.seed}
        key = request.key if messages is request.messages else request_key(
            self.model, request.prompt_version, {**sampling, **request.options}, messages
        )  # fmt: skip
        cached = self.cache.get(key)
        if cached is not None:
            return cached, None
        if self.batch_runner is not None:  # batch transport: asked in the next batch round
            raise self.batch_runner.defer(key, request, messages)
        estimate = self.config.transport.cost_usd(estimate_tokens("".join(m["content"] for m in messages)),
                                                  request.max_tokens)  # fmt: skip
        if self.config.max_cost and self.spent_usd + estimate > self.config.max_cost:
            raise LLMRequestError(
                f"not sent: --max-cost {self.config.max_cost} USD would be exceeded; rerun with a larger budget"
            )
        self.spent_usd += estimate  # reserve; corrected below
        completion = await client.complete(
            messages, max_tokens=request.max_tokens, temperature=self.config.temperature, seed=self.config.seed,
            response_format=request.options.get("response_format"), extra_body=request.options.get("extra_body"),
        )  # fmt: skip
        self.spent_usd += completion.cost_usd - estimate
        self.requests_sent += 1
        reply = CachedReply(completion.text, completion.tokens_in, completion.tokens_out, completion.latency_s,
                            completion.cost_usd, completion.finish_reason)  # fmt: skip
        return reply, key

    def _parse(self, request: _Request, text: str) -> tuple[list[Any], bool]:
        """The reply of each item of ``request`` and whether it was repaired; raises ``ReplyError``."""
        ids = [f"agent_{k}" for k in range(request.items[0].episode.action.shape[1])]
        query = request.items[0].query
        if query is not None:
            reply, repaired = parse_shares(text, query, ids)
            return [reply], repaired
        spans = [(i.episode.episode_id, i.t1 - i.t0) for i in request.items]
        return parse_reply(text, agent_ids=ids, episodes=spans, with_tasks=self.config.with_tasks,
                           n_tasks=request.n_tasks)  # fmt: skip

    async def _run(self, client: LLMClient, request: _Request) -> None:
        spans = [(i.episode.episode_id, i.t1 - i.t0) for i in request.items]
        if not request.messages:  # a shares window without a rewarded step: nothing to ask
            request.result[0] = {"reply": None, "repaired": False, "error": "", "tokens_in": 0, "tokens_out": 0,
                                 "latency_s": 0.0, "cost_usd": 0.0, "raw": ""}  # fmt: skip
            return
        replies: list[CachedReply] = []
        fresh: list[tuple[str, CachedReply]] = []
        error, parsed, repaired = "", None, False

        async def ask(messages: list[dict[str, str]]) -> None:
            reply, key = await self._ask(client, request, messages)
            replies.append(reply)
            if key is not None:
                fresh.append((key, reply))

        try:
            await ask(request.messages)
            try:
                parsed, repaired = self._parse(request, replies[0].text)
            except ReplyError as exc:
                retry = [*request.messages, {"role": "assistant", "content": quote(replies[0].text)},
                         {"role": "user", "content": f"That reply was invalid: {exc}. Answer again with only the "
                                                     "corrected JSON object."}]  # fmt: skip
                await ask(retry)
                parsed, _ = self._parse(request, replies[1].text)
                repaired = True
            for key, reply in fresh:  # the whole exchange, so a rerun replays it without a request
                self.cache.put(key, self.model, request.prompt_version, reply)
        except (ReplyError, LLMRequestError) as exc:
            error = str(exc)
        except Exception as exc:  # one bad exchange fails its episodes, never the whole run
            log.exception("LLM request for episodes %s failed unexpectedly", [e for e, _ in spans])
            error = f"unexpected {type(exc).__name__} while handling the LLM reply: {str(exc)[:300]} (please report it)"
        share = 1.0 / len(request.items)
        for k in range(len(request.items)):
            request.result[k] = {
                "reply": parsed[k] if parsed is not None else None,
                "repaired": repaired,
                "error": error,
                "tokens_in": int(sum(r.tokens_in for r in replies) * share),
                "tokens_out": int(sum(r.tokens_out for r in replies) * share),
                "latency_s": sum(r.latency_s for r in replies) * share,
                "cost_usd": sum(r.cost_usd for r in replies) * share,
                "raw": replies[-1].text if replies else "",
            }

    def _assemble(self, episode: Episode, n: int, requests: list[_Request], errors: dict[int, str]) -> CriticOutput:
        if episode.episode_id in errors:
            return CriticOutput.failed(episode.length, n, errors[episode.episode_id])
        parts = sorted(
            ((item.t0, item.t1, r, r.result[k]) for r in requests for k, item in enumerate(r.items)
             if item.episode is episode),
            key=lambda p: p[0],
        )  # fmt: skip
        credits = np.full((episode.length, n), np.nan, np.float32)  # [T, N]
        tasks = np.full((episode.length, n), -1, np.int16) if self.config.with_tasks else None  # [T, N]
        rationale = [[] for _ in range(n)]  # type: list[list[str]]
        summaries, raw, errs = [], [], []
        notes: list[str] = []
        for t0, t1, request, res in parts:
            if not request.messages:  # a shares window without a reward: 0 credit, no tasks asked
                credits[t0:t1] = 0.0
                continue
            raw.append(res["raw"])
            if res["reply"] is None:
                errs.append(f"steps {t0}-{t1 - 1}: {res['error']}")
                continue
            reply, query = res["reply"], request.items[0].query
            if query is not None:  # shares form: the shares become credits on the reward's scale
                credits[t0:t1], window_tasks, fallbacks = shares_credits(reply, query, n)
                texts, notes = list(reply.rationales), notes + fallbacks
            else:  # dense form: the numbers are the credits
                credits[t0:t1] = np.array([a.credits for a in reply.agents], np.float32).T  # [L, N]
                window_tasks = np.array([a.tasks for a in reply.agents], np.int16).T if tasks is not None else None
                texts = [a.rationale for a in reply.agents]
            if tasks is not None and window_tasks is not None:
                tasks[t0:t1] = window_tasks
            for i, text in enumerate(texts):
                rationale[i].append(text if len(parts) == 1 else f"[{t0}-{t1 - 1}] {text}")
            summaries.append(reply.summary)
        failed = bool(errs)
        if failed:
            credits[:] = np.nan  # never a partial episode: a failed window fails the episode
        repaired = any(p[3]["repaired"] for p in parts) or bool(notes)
        return CriticOutput(
            credits=credits,
            status="failed" if failed else ("repaired" if repaired else "ok"),
            error="; ".join(errs or notes),
            rationale=[" ".join(r) for r in rationale],
            summary=" ".join(summaries),
            tasks=None if failed else tasks,
            model=self.model,
            prompt_version=parts[0][2].prompt_version if parts else "",
            tokens_in=sum(p[3]["tokens_in"] for p in parts),
            tokens_out=sum(p[3]["tokens_out"] for p in parts),
            latency_s=sum(p[3]["latency_s"] for p in parts),
            cost_usd=sum(p[3]["cost_usd"] for p in parts),
            raw_response="\n---\n".join(raw),
        )
