"""HTTP ingress (OpenAI-compatible): routes, request checks, the model backends it forwards to."""
