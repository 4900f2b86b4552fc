#!/usr/bin/env bash
# serve_app vs bare `vllm serve`: same model, same engine arguments, same load (loadtest/), ratios.
#
# Starts both servers on 127.0.0.1 (ports 8011, 8012), then for each load point drives vLLM and
# serve_app one after the other (order alternating): closed loop at 1, 8 and 32 users, and open-loop
# Poisson arrivals at 50% and 90% of the capacity vLLM showed at 32 users. Writes per-run reports to
# results/side_by_side/<point>_<server>/, and summary.{json,md} (ratios and the issue's targets)
# through benchmarks/side_by_side_summary.py. Stops both servers on exit.
#
#   bash benchmarks/side_by_side.sh            # ~15 minutes on a 2-core machine
#   SERVE_APP_EXTRA_YAML='engine: {isolate_cpus: false}' bash benchmarks/side_by_side.sh   # an A/B knob
set -euo pipefail
cd "$(dirname "$0")/.."
. .venv/bin/activate
MODEL_DIR=$(serve-app models prepare --model default)
OUT=${OUT:-results/side_by_side}
rm -rf "$OUT"; mkdir -p "$OUT"
cat > "$OUT/serve_app.yaml" <<YAML
model: {source: default}
engine: {dtype: float32, max_model_len: 2048, max_num_seqs: 32, enforce_eager: true, cpu_kvcache_space_gib: 1}
${SERVE_APP_EXTRA_YAML:-}
YAML
serve-app serve --config "$OUT/serve_app.yaml" --port 8011 > "$OUT/serve_app.log" 2>&1 & SA_PID=$!
VLLM_CPU_KVCACHE_SPACE=1 python scripts/vllm_cli.py serve "$MODEL_DIR" --served-model-name SmolLM2-135M-Instruct \
  --host 127.0.0.1 --port 8012 --dtype float32 --max-model-len 2048 --max-num-seqs 32 --enforce-eager \
  > "$OUT/vllm.log" 2>&1 & VLLM_PID=$!
trap 'kill -INT $SA_PID 2>/dev/null; kill $VLLM_PID 2>/dev/null; wait' EXIT
for port in 8011 8012; do
  for _ in $(seq 600); do curl -sf "127.0.0.1:$port/health" >/dev/null && break; sleep 1; done
done
run() {  # name port load-args...
  local name=$1 port=$2; shift 2
  python -m loadtest.cli run --base-url "http://127.0.0.1:$port" --endpoint completions "$@" \
    --input-tokens 64 --max-tokens 64 --ignore-eos --tokenizer "$MODEL_DIR" --no-progress --no-plots \
    --allow-invalid --out "$OUT/${name}" | sed -n 3p | sed "s/^/$name: /"
}
pair() {  # point vllm-first? load-args...
  local point=$1 first=$2; shift 2
  if [ "$first" = vllm ]; then run "${point}_vllm" 8012 "$@"; run "${point}_serve_app" 8011 "$@"
  else run "${point}_serve_app" 8011 "$@"; run "${point}_vllm" 8012 "$@"; fi
}
pair c1 vllm --concurrency 1 --num-requests 10 --warmup-requests 1
pair c8 serve_app --concurrency 8 --num-requests 40 --warmup-requests 8
pair c32 vllm --concurrency 32 --num-requests 96 --warmup-requests 32
CAPACITY=$(python -c "import json; print(json.load(open('$OUT/c32_vllm/result.json'))['summary']['request_throughput_rps'])")
for pct in 50 90; do
  RATE=$(python -c "print(round($CAPACITY * $pct / 100, 3))")
  pair "poisson${pct}" serve_app --rate-rps "$RATE" --arrival poisson --num-requests 48 --warmup-requests 4 --seed 1
done
python benchmarks/wire_bytes.py --serve-app http://127.0.0.1:8011 --vllm http://127.0.0.1:8012 --out "$OUT/wire_bytes"
python benchmarks/side_by_side_summary.py "$OUT"
