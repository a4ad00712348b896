"""Named test doubles: stand-ins for what cannot run on this machine, and the workloads they serve.

Tests and benchmarks both import them from here (neither imports the other). Every class is named as
a double, and a result measured against one says so:
- `llm_servers.ScriptedRuleFollowingServer`: a capable LLM behind an OpenAI-compatible API (follows
  the guidance's keyword rules, replays scripted reflections); `llm_servers.FaultInjectionServer`:
  an OpenAI-shaped server that scripts provider failures (timeouts, 429, 5xx, bad bodies);
- `vlm_server.ScriptedVLMServerDouble`: an OpenAI-compatible VLM server (vLLM is GPU-only);
- `engine_server.ContinuousBatchingEngineDouble`: a GPU serving engine's batching, for the teacher
  benchmark;
- `rule_following_data`: the hidden-rule Stage-B groups the rule-following double is measured on;
  `teacher_workloads`: the varied-length teacher workload.
The stdlib servers share one skeleton, `http_server.ScriptedHTTPServer`.
"""
