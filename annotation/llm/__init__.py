"""The LLM critic (LLM-MCA and LLM-TACA): prompts, replies, client, cache, local server.

Input: stored episodes, replayed to get the env's ``describe()`` at every step. Output:
per-agent credits (and, for TACA, tasks), rationales and a summary per episode, from any
OpenAI-compatible endpoint or the embedded local llama.cpp server.

Modules: ``prompt`` (templates → messages, ``prompt_version``), ``reply`` (parse and
validate the JSON reply, JSON schema and GBNF grammar per request), ``client`` (async
OpenAI client with our retries), ``wire`` (the response size cap and the checks of a
chat-completion body), ``cache`` (sqlite request cache), ``server`` (the local llama.cpp
server), ``critic`` (the critic and the batch annotation loop).
"""
