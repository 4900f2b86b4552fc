#!/usr/bin/env bash
# Run a command while sampling the machine's used memory (MemTotal - MemAvailable) every second; print
# `memory peak: N.N GB` and `wall time: N.N min` when it ends, whatever its exit status (which is passed on).
#   bash scripts/memory_peak.sh CMD [ARGS...]
set -uo pipefail
PEAK_FILE="$(mktemp)"
echo 0 > "$PEAK_FILE"
(
  peak=0
  while :; do
    used=$(awk '/^MemTotal:/{t=$2} /^MemAvailable:/{a=$2} END{print t-a}' /proc/meminfo)
    if [ "$used" -gt "$peak" ]; then peak=$used; echo "$peak" > "$PEAK_FILE"; fi
    sleep 1
  done
) &
SAMPLER=$!
START=$(date +%s)
"$@"
STATUS=$?
kill "$SAMPLER" 2>/dev/null
wait "$SAMPLER" 2>/dev/null
awk '{printf "memory peak: %.1f GB\n", $1 / 1024 / 1024}' "$PEAK_FILE"
echo "wall time: $(( ($(date +%s) - START) / 60 )) min $(( ($(date +%s) - START) % 60 )) s"
rm -f "$PEAK_FILE"
exit "$STATUS"
