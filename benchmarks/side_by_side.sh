#!/usr/bin/env bash
# serve_app vs bare `vllm serve`, same model and engine arguments, same load (loadtest/), ratios.
# Starts both servers on 127.0.0.1 (ports 8011, 8012), runs closed-loop 1 and 16 users against each
# (alternating), writes results/side_by_side/{c1,c16}_{serve_app,vllm}/ and compare_*.md, stops both.
set -euo pipefail
cd "$(dirname "$0")/.."
. .venv/bin/activate
MODEL_DIR=$(serve-app models prepare --model default)
OUT=results/side_by_side
mkdir -p "$OUT"
cat > "$OUT/serve_app.yaml" <<YAML
model: {source: default}
engine: {dtype: float32, max_model_len: 2048, max_num_seqs: 32, enforce_eager: true, cpu_kvcache_space_gib: 1}
YAML
serve-app serve --config "$OUT/serve_app.yaml" --port 8011 > "$OUT/serve_app.log" 2>&1 & SA_PID=$!
VLLM_CPU_KVCACHE_SPACE=1 python scripts/vllm_cli.py serve "$MODEL_DIR" --served-model-name SmolLM2-135M-Instruct \
  --host 127.0.0.1 --port 8012 --dtype float32 --max-model-len 2048 --max-num-seqs 32 --enforce-eager \
  > "$OUT/vllm.log" 2>&1 & VLLM_PID=$!
trap 'kill -INT $SA_PID 2>/dev/null; kill $VLLM_PID 2>/dev/null; wait' EXIT
for port in 8011 8012; do
  for _ in $(seq 600); do curl -sf "127.0.0.1:$port/health" >/dev/null && break; sleep 1; done
done
run() {  # name port concurrency requests warmup
  python -m loadtest.cli run --base-url "http://127.0.0.1:$2" --endpoint completions --concurrency "$3" \
    --num-requests "$4" --warmup-requests "$5" --input-tokens 64 --max-tokens 64 --ignore-eos \
    --tokenizer "$MODEL_DIR" --no-progress --allow-invalid --out "$OUT/$1" | sed -n 1,3p
}
for round in 1 2; do
  run c1_vllm_r$round 8012 1 8 1; run c1_serve_app_r$round 8011 1 8 1
  run c16_serve_app_r$round 8011 16 48 16; run c16_vllm_r$round 8012 16 48 16
done
for c in c1 c16; do
  for round in 1 2; do
    python -m loadtest.cli compare "$OUT/${c}_vllm_r$round/result.json" "$OUT/${c}_serve_app_r$round/result.json" \
      --labels vllm,serve_app --out "$OUT/compare_${c}_r$round.md"
  done
done
