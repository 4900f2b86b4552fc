#!/usr/bin/env bash
# The default deployment with `engine.dtype: auto` against pinned float32, through the whole graph, one after the
# other (one server at a time: both on 2 cores would share them). Loopback only; stops the servers it starts.
#   bash benchmarks/dtype_throughput.sh            # ~6 minutes; results/dtype_throughput/{auto,float32}_c{1,16}/
# `auto` resolves per CPU (serve_app/server/engine_dtype.py): bfloat16 with avx512_bf16/AMX, else float32. The model
# replica logs its choice ("Model replica ready: ... (dtype bfloat16 from 'auto', ...)") in Ray's worker logs.
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$PWD/.venv/bin:$PATH"
OUT=results/dtype_throughput
mkdir -p "$OUT"
MODEL_DIR=$(serve-app models prepare --model default)
PID=""
trap '[ -n "$PID" ] && kill -INT $PID 2>/dev/null; wait' EXIT
for dtype in auto float32; do
  cat > "$OUT/$dtype.yaml" <<YAML
model: {source: default}
engine: {dtype: $dtype, max_model_len: 2048, max_num_seqs: 32, enforce_eager: true, cpu_kvcache_space_gib: 1}
YAML
  serve-app serve --config "$OUT/$dtype.yaml" --port 8013 > "$OUT/$dtype.log" 2>&1 & PID=$!
  for _ in $(seq 600); do curl -sf 127.0.0.1:8013/health >/dev/null && break; sleep 1; done
  for c in 1 16; do
    n=$(( c == 1 ? 8 : 48 ))
    serve-app-loadtest run --base-url http://127.0.0.1:8013 --endpoint completions --concurrency $c --num-requests $n \
      --warmup-requests $(( c == 1 ? 2 : 16 )) --input-tokens 64 --max-tokens 64 --ignore-eos \
      --tokenizer "$MODEL_DIR" --out "$OUT/${dtype}_c$c" > /dev/null
  done
  kill -INT $PID; wait $PID 2>/dev/null || true; PID=""
done
python - "$OUT" <<'PY'
import json, sys
from pathlib import Path
out = Path(sys.argv[1])
lines = ["| engine.dtype | streams | output tok/s | TTFT p50 ms | TPOT p50 ms | errors |", "|---|---|---|---|---|---|"]
for dtype in ("auto", "float32"):
    for c in (1, 16):
        s = json.loads((out / f"{dtype}_c{c}" / "result.json").read_text())["summary"]
        lat = s["latency_ms"]
        lines.append(f"| {dtype} | {c} | {s['output_throughput_tps']:.1f} | {lat['ttft']['p50']['value']:.0f} | "
                     f"{lat['tpot']['p50']['value']:.0f} | {s['num_errors']} |")
(out / "summary.md").write_text("\n".join(lines) + "\n")
print("\n".join(lines))
PY
