"""Latency-target autoscaling for the model deployment: window.py (inside each replica), policy.py (pure),
hook.py (the Ray Serve policy function and autoscaling_config dicts).

Three layers, outermost last:

- `ReplicaLatencyStats` (used inside each model replica): windowed p99 TTFT / TPOT in bounded memory plus
  the engine's running / waiting counts; `snapshot()` is what the replica's `record_autoscaling_stats`
  returns to Ray Serve.
- `decide_num_replicas` (pure): plain dataclasses in, a replica count and the next state out. It scales up on
  whichever comes first of (a) the engine queue per replica, now or projected `queue_lookahead_s` ahead from
  its growth, crossing `max_waiting_per_replica`, or (b) the worst replica's p99 reaching
  `upscale_latency_ratio` of its target; it scales down only when the queue is empty and p99 sits below
  `downscale_latency_ratio` (with room to spare after removing a replica), or when fully idle. A direction must
  hold for `upscale_delay_s` / `downscale_delay_s` before it acts, and p99s are ignored until the windows have
  refilled after a change, so one slow window cannot trigger a second step.
- `LatencyTargetPolicy` / `latency_target_policy` (the Ray Serve hook): read this deployment's per-replica
  custom metrics from the `AutoscalingContext`, call the pure function, keep its state in `policy_state`.

None of them imports Ray or the rest of serve_app at import time.
"""
