"""The simulated engine (`engine.backend: simulated`): a performance model behind the model server's contract.

`scheduler.py` (pure: continuous batching, KV blocks, preemption, prefix hits, step cost), `profile.py` (the
YAML performance profiles under `profiles/`), `prompt.py` (prompt token counts), `chunks.py` (vLLM-shaped
OpenAI chunks) and `server.py` (SimulatedModelServer: one asyncio task steps the scheduler in real time).
No vLLM, no torch: dozens of replicas fit on a small machine.
"""
