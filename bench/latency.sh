#!/usr/bin/env bash
# bench/latency.sh (`just bench-latency`; row 5 of `just bench`): end-to-end
# latency through the broker at a steady load.
#
# What it measures: BENCH_RUNS (3) runs of benches/latency.rs (`cargo bench
# --bench latency`): our producer sends BENCH_LATENCY_RATE (10,000) keyed
# 100-byte records a second for BENCH_LATENCY_SECS (10) after a 1 s warm-up
# into a fresh 6-partition topic, each stamped with its send time (µs); our
# consumer, in the same process, records handler start - send time. Every run
# must see every record come through (it fails otherwise).
#
# How to read it: the median over runs of each run's p50, p99 and p99.9 (and
# max) in milliseconds, min-max beside them. It includes the producer's 5 ms
# linger (its default), the broker's acks=all write and the consumer's fetch
# round trip. "sent at" is the rate the producer achieved: below the target,
# the machine could not keep up. The same lands in target/bench/latency.json.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
BENCH_NAME=bench-latency
# shellcheck source=bench/lib.sh
source bench/lib.sh

logs=$out/latency-logs
results=$logs/results.tsv
rate=${BENCH_LATENCY_RATE:-10000}
secs=${BENCH_LATENCY_SECS:-10}
prefix=bench-latency-$(date +%Y%m%d%H%M%S)
need_tools
mkdir -p "$logs"
printf 'name\trun\twall_s\tuser_s\tsys_s\tstatus\trss_kib\tp50_ms\tp99_ms\tp999_ms\tmax_ms\tsent_rate\n' >"$results"

cleanup() {
  kafka_tool topics --bootstrap-server "$broker" --delete --topic "$prefix-.*" >/dev/null 2>&1 ||
    say "could not delete the topics $prefix-* (delete them by hand)"
}
trap cleanup EXIT

say "building benches/latency.rs (cargo bench --no-run)"
exe=$(bench_exe latency)

failed=0
for run in $(seq 1 "$runs"); do
  say "run $run of $runs: $rate msg/s for $secs s (+1 s warm-up)"
  json=$logs/run-$run.json log=$logs/run-$run.log rc=0
  rm -f "$json"
  BENCH_LATENCY_JSON=$json BENCH_LATENCY_TOPIC=$prefix-$run BENCH_LATENCY_RATE=$rate BENCH_LATENCY_SECS=$secs \
    KAFKA_BOOTSTRAP=$broker "$exe" >"$log" 2>&1 || rc=$?
  if [ "$rc" = 0 ] && [ -s "$json" ]; then
    read -r p50 p99 p999 max sent < <(jq -r '"\(.p50_ms) \(.p99_ms) \(.p999_ms) \(.max_ms) \(.sent_rate | floor)"' "$json")
    printf 'latency\t%s\t0\t0\t0\tok\t0\t%s\t%s\t%s\t%s\t%s\n' "$run" "$p50" "$p99" "$p999" "$max" "$sent" >>"$results"
    say "  p50 $p50 ms, p99 $p99 ms, p99.9 $p999 ms, max $max ms (sent at $sent msg/s)"
  else
    failed=1
    printf 'latency\t%s\t0\t0\t0\tFAILED: exit %s (log: %s)\t0\t\t\t\t\t\n' "$run" "$rc" "$log" >>"$results"
    say "  run $run FAILED (exit $rc, log: $log)"; tail -n 5 "$log" >&2
  fi
done

printf '\n%-8s %9s %15s\n' latency "median ms" "min-max ms"
declare -A q
for c in 8:p50 9:p99 10:p99.9 11:max 12:sent_msgs_per_s; do
  read -r m mi ma ok < <(summarise "$results" latency "${c%%:*}")
  q[${c#*:}]="$m $mi $ma"
  printf '%-8s %9s %15s\n' "${c#*:}" "$m" "$mi-$ma"
done
echo "note: target $rate msg/s for $secs s per run, $runs run(s); producer linger 5 ms (default), consumer defaults"

jq -n --arg date "$(date -u +%FT%TZ)" --arg commit "$(git_commit)" --argjson machine "$(machine_json)" \
  --argjson runs "$(rows_json "$results" latency)" --argjson rate "$rate" --argjson secs "$secs" \
  --arg p50 "${q[p50]}" --arg p99 "${q[p99]}" --arg p999 "${q[p99.9]}" --arg max "${q[max]}" --arg sent "${q[sent_msgs_per_s]}" \
  'def stat: split(" ") | map(if . == "-" then null else tonumber end) | {median: .[0], min: .[1], max: .[2]};
   {date: $date, git_commit: $commit, machine: $machine, target_msgs_per_s: $rate, seconds_per_run: $secs,
    p50_ms: ($p50 | stat), p99_ms: ($p99 | stat), p999_ms: ($p999 | stat), max_ms: ($max | stat),
    sent_msgs_per_s: ($sent | stat), runs: $runs}' >"$out/latency.json"
say "wrote $out/latency.json (logs in $logs)"
[ "$failed" = 0 ] || die "some runs FAILED (see above)"
