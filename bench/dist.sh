#!/usr/bin/env bash
# bench/dist.sh (`just bench-dist`): the static musl binaries of `just dist`
# next to the glibc release build, on the local broker.
#
# What it measures: BENCH_RUNS (3) rounds, the two builds taking turns, of
#   produce  PRODUCER --key-separator '|' --input FILE BROKER TOPIC
#            (BENCH_LINES keyed 100-byte lines, bench/produce.sh's input, into a
#            fresh 6-partition topic per run; every record must be acknowledged)
#   consume  CONSUMER --partitions all --from earliest --exit-at-end
#            --stats-interval 0 --format value BROKER TOPIC --group G
#            (a 6-partition backlog of BENCH_LINES records, to a file on tmpfs;
#            the file must hold every record)
# with PRODUCER/CONSUMER from target/release (glibc) and target/dist (musl).
#
# How to read it: the median wall time (min-max) per row, CPU seconds and peak
# RSS, and "musl/glibc": glibc's median time / musl's, the musl build's
# throughput as a share of the glibc build's (issue 11's target: >= 0.9).
# The same lands in target/bench/dist.json.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
BENCH_NAME=bench-dist
# shellcheck source=bench/lib.sh
source bench/lib.sh

shm=${BENCH_SHM:-/dev/shm}
logs=$out/dist-logs
results=$logs/results.tsv
prefix=bench-dist-$(date +%Y%m%d%H%M%S)
need_tools
declare -A dir=([glibc]=target/release [musl]=target/dist)
for build in glibc musl; do
  for bin in producer consumer; do
    [ -x "${dir[$build]}/$bin" ] || die "${dir[$build]}/$bin not found: run just build and just dist first"
  done
done
mkdir -p "$logs"
printf 'name\trun\twall_s\tuser_s\tsys_s\tstatus\trss_kib\tcount\n' >"$results"

cleanup() {
  rm -f "$shm/mykafkams-dist-$$.out"
  kafka_tool topics --bootstrap-server "$broker" --delete --topic "$prefix-.*" >/dev/null 2>&1 ||
    say "could not delete the topics $prefix-* (delete them by hand)"
}
trap cleanup EXIT

input=$(bench_input "$lines")
backlog=$prefix-backlog
kafka_tool topics --bootstrap-server "$broker" --create --topic "$backlog" --partitions 6 --replication-factor 1 >/dev/null
say "filling $backlog with $lines records"
target/release/producer --key-separator '|' --input "$input" "$broker" "$backlog" >"$logs/fill.log" 2>&1 ||
  { tail -n 5 "$logs/fill.log" >&2; die "filling $backlog failed"; }

# run_one WHAT BUILD RUN: appends name run wall user sys status rss count.
run_one() {
  local what=$1 build=$2 run=$3 name="$1-$2" log="$logs/$1-$2-$3.log" tfile="$logs/$1-$2-$3.time" rc=0 count=
  local exe=${dir[$build]}/$what
  case $what in
    producer)
      local topic=$prefix-$build-$run
      kafka_tool topics --bootstrap-server "$broker" --create --topic "$topic" --partitions 6 --replication-factor 1 >/dev/null
      timed "$tfile" "$exe" --key-separator '|' --input "$input" "$broker" "$topic" >"$log" 2>&1 || rc=$?
      count=$(grep -oE '[0-9]+ acknowledged' "$log" | awk '{ print $1 }' | tail -1) ;;
    consumer)
      local dest=$shm/mykafkams-dist-$$.out
      timed "$tfile" "$exe" --partitions all --from earliest --exit-at-end --stats-interval 0 --format value \
        "$broker" "$backlog" --group "$prefix-$build-$run" >"$dest" 2>"$log" || rc=$?
      count=$(wc -l <"$dest"); rm -f "$dest" ;;
  esac
  local wall user sys rss status=ok
  read -r wall user sys rss < <(time_of "$tfile")
  if [ "$rc" != 0 ]; then status="FAILED: exit $rc (log: $log)"
  elif [ "${count:-}" != "$lines" ]; then status="FAILED: ${count:-?} records, not $lines (log: $log)"
  fi
  printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$name" "$run" "$wall" "$user" "$sys" "$status" "$rss" "$count" >>"$results"
  say "  $name run $run: $wall s, CPU $user+$sys s, peak RSS $((rss / 1024)) MiB ($status)"
}

say "$lines records, broker $broker, $runs round(s), glibc and musl taking turns; machine: $(machine)"
for run in $(seq 1 "$runs"); do
  for what in producer consumer; do
    # Alternate which build goes first, so neither always meets a warmer broker.
    if [ $((run % 2)) = 1 ]; then order=(glibc musl); else order=(musl glibc); fi
    for build in "${order[@]}"; do run_one "$what" "$build" "$run"; done
  done
done

failed=0
printf '\n%-8s %-6s %9s %13s %10s %7s %9s %11s\n' what build "median s" "min-max s" "msgs/s" "CPU s" "peak RSS" "musl/glibc"
json_rows=()
for what in producer consumer; do
  declare -A med=()
  for build in glibc musl; do
    read -r m _ _ _ < <(summarise "$results" "$what-$build" 3)
    med[$build]=$m
  done
  for build in glibc musl; do
    n=$what-$build
    read -r m mi ma ok < <(summarise "$results" "$n" 3)
    read -r cpu _ _ _ < <(awk -F'\t' 'NR > 1 { $4 = $4 + $5 } 1' OFS='\t' "$results" | summarise /dev/stdin "$n" 4)
    rss=$(awk -F'\t' -v t="$n" '$1 == t && $7 > r { r = $7 } END { print r + 0 }' "$results")
    [ "$(failures "$results" "$n")" = 0 ] || failed=1
    rate=-; [ "$m" != - ] && rate=$(awk -v s="$m" -v n="$lines" 'BEGIN { printf "%.0f", n / s }')
    vs=-; [ "$build" = musl ] && vs=$(ratio "${med[glibc]}" "$m")
    printf '%-8s %-6s %9s %13s %10s %7s %7s MiB %11s\n' "$what" "$build" "$m" "$mi-$ma" "$rate" "$cpu" "$((rss / 1024))" "$vs"
    json_rows+=("$(jq -n --arg what "$what" --arg build "$build" --arg m "$m" --arg cpu "$cpu" \
      --argjson rss "$rss" --arg vs "$vs" --argjson runs "$(rows_json "$results" "$n")" \
      '{what: $what, build: $build, median_s: ($m | tonumber? // null), cpu_s: ($cpu | tonumber? // null),
        peak_rss_kib: $rss, musl_over_glibc: ($vs | tonumber? // null), runs: $runs}')")
  done
done
printf '%s\n' "${json_rows[@]}" | jq -s --argjson machine "$(machine_json)" --arg commit "$(git_commit)" \
  --argjson lines "$lines" '{bench: "dist", commit: $commit, lines: $lines, machine: $machine, rows: .}' >"$out/dist.json"
say "wrote $out/dist.json"
[ "$failed" = 0 ] || die "some runs failed (see $results)"
