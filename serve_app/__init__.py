"""serve_app: real-time LLM serving on a Ray Serve graph.

Kept light on purpose: importing a pure module (config, framing, autoscaling policy) must not import
Ray, torch or vLLM.
"""

__version__ = "0.1.0"
