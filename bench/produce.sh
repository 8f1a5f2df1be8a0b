#!/usr/bin/env bash
# bench/produce.sh (`just bench-produce`): our producer next to kcat and Java's
# ProducerPerformance on the local broker (issue 9).
#
# What it measures: the wall time and peak RSS (/usr/bin/time -f '%e %M') of
# publishing BENCH_LINES (1,000,000) records with a 100-byte value into a fresh
# 6-partition topic, acks=all, for each tool; the tools take turns, BENCH_RUNS (3)
# rounds, and every run is checked: the topic's end offsets must add up to the
# line count, or the row fails (and the script exits 1 after the table).
#   ours  target/release/producer --key-separator '|' --input FILE BROKER TOPIC
#   kcat  kcat -P -K '|' -l FILE (librdkafka; skipped with a hint if not installed)
#   java  docker/kafka-local.sh tool producer-perf-test (Java's ProducerPerformance)
# The input file (target/bench/produce-<lines>.txt) has lines `key-<n mod 1000>|VALUE`,
# VALUE 100 bytes; ours and kcat read it, ProducerPerformance reads no file and
# sends unkeyed random 100-byte values.
#
# How to read it: each row gives the median wall time of its runs (min-max beside
# it), msgs/s and MB/s (value bytes, 10^6) from that median, and the highest
# peak RSS of any run. "vs kcat" is kcat's median time / the row's median time:
# above 1 the row is faster than librdkafka, below 1 slower. Wall times include
# process start-up and connecting; the Java row's wall time includes JVM start-up,
# its own figure (printed by the tool, in the notes) does not. The same lands
# in target/bench/produce.json. Compare rows of one run: the broker shares the
# machine's cores with the producer being measured.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
BENCH_NAME=bench-produce
# shellcheck source=bench/lib.sh
source bench/lib.sh   # broker, runs, lines, out; say, die, kafka_tool, bench_input

value_size=100 partitions=6
logs=$out/produce-logs
results=$logs/results.tsv
prefix=bench-produce-$(date +%Y%m%d%H%M%S)
producer=target/release/producer

need_tools
[ -x "$producer" ] || die "$producer not found: build it first (just build)"
mkdir -p "$logs"; : >"$results"

# The input (`key-<n mod 1000>|<100-byte value>`), made once and reused.
input=$(bench_input "$lines")
say "input: $input ($lines lines)"

# The commands and the settings each runs with.
declare -A cmd settings
# Ours runs with its defaults (idempotent, acks=all, 5 requests in flight per
# connection, 256 KiB batches, 8 MiB buffer) and the same linger as kcat;
# BENCH_OURS_ARGS adds flags (e.g. "--batch-size 1048576 --buffer-memory 16777216").
ours_args=(--key-separator '|' --input "$input" --linger-ms 5)
# shellcheck disable=SC2206
ours_args+=(${BENCH_OURS_ARGS:-})
ours_set="linger.ms=5, defaults otherwise: acks=all enable.idempotence=true max.in.flight.requests.per.connection=5 batch.size=262144 buffer.memory=8388608 compression none${BENCH_OURS_ARGS:+; plus $BENCH_OURS_ARGS}"
cmd[ours]="$producer --key-separator '|' --input $input ${ours_args[*]:4} $broker TOPIC"
settings[ours]="${ours_set# }"

kcat_x=(-X linger.ms=5 -X enable.idempotence=true -X partitioner=murmur2_random)
cmd[kcat]="kcat -P -b $broker -t TOPIC -K '|' ${kcat_x[*]} -l $input"
settings[kcat]="librdkafka defaults (acks=all, batch.size=1000000, compression none) + linger.ms=5, enable.idempotence=true (as ours by default), partitioner=murmur2_random (Java's key->partition map)"
java_props=(bootstrap.servers="$broker" acks=all linger.ms=5 enable.idempotence=true)
cmd[java]="docker/kafka-local.sh tool producer-perf-test --topic TOPIC --num-records $lines --record-size $value_size --throughput -1 --producer-props ${java_props[*]}"
settings[java]="acks=all linger.ms=5 enable.idempotence=true, Java defaults otherwise (batch.size=16384, compression none); unkeyed random values, no input file"

tools=(ours kcat java)
declare -A skip
if ! ensure_kcat; then
  skip[kcat]="kcat not installed (Debian/Ubuntu: apt-get install -y kcat; macOS: brew install kcat)"
  say "${skip[kcat]}: skipping its row"
fi
command -v java >/dev/null || { skip[java]="java not found (Debian: apt-get install -y openjdk-17-jre-headless)"; say "${skip[java]}: skipping its row"; }

cleanup() {
  say "deleting the benchmark topics $prefix-*"
  kafka_tool topics --bootstrap-server "$broker" --delete --topic "$prefix-.*" >/dev/null 2>&1 ||
    say "could not delete the topics $prefix-* (delete them by hand)"
}
trap cleanup EXIT

# One run of one tool into a fresh topic; appends: tool run seconds rss_kib status own_rate.
run_one() {
  local tool=$1 run=$2 topic="$prefix-$1-$2" log="$logs/$1-$2.log" tfile="$logs/$1-$2.time"
  kafka_tool topics --bootstrap-server "$broker" --create --topic "$topic" \
    --partitions "$partitions" --replication-factor 1 >/dev/null
  local rc=0
  case $tool in
    ours) /usr/bin/time -f '%e %M' -o "$tfile" "$producer" "${ours_args[@]}" "$broker" "$topic" ;;
    kcat) /usr/bin/time -f '%e %M' -o "$tfile" kcat -P -b "$broker" -t "$topic" -K '|' "${kcat_x[@]}" -l "$input" ;;
    java) /usr/bin/time -f '%e %M' -o "$tfile" docker/kafka-local.sh tool producer-perf-test --topic "$topic" \
            --num-records "$lines" --record-size "$value_size" --throughput -1 --producer-props "${java_props[@]}" ;;
  esac >"$log" 2>&1 || rc=$?
  local secs rss own="" count status=ok
  read -r secs rss < <(tail -n 1 "$tfile") || { secs=0 rss=0; }
  [ "$tool" = java ] && own=$(grep -oE '^[0-9]+ records sent, [0-9.]+ records/sec' "$log" | tail -1 | awk '{print $4}')
  count=$(kafka_tool get-offsets --bootstrap-server "$broker" --topic "$topic" 2>/dev/null | awk -F: '{ s += $NF } END { print s + 0 }') || count="? (get-offsets failed)"
  if [ "$rc" != 0 ]; then status="FAILED: exit $rc (log: $log)"
  elif [ "$count" != "$lines" ]; then status="FAILED: topic holds $count records, not $lines (log: $log)"
  fi
  printf '%s\t%s\t%s\t%s\t%s\t%s\n' "$tool" "$run" "$secs" "$rss" "$status" "$own" >>"$results"
  if [ "$status" = ok ]; then
    say "  $tool run $run: ${secs} s, peak RSS $((rss / 1024)) MiB, $count records${own:+, its own figure $own msg/s}"
  else
    say "  $tool run $run: $status" ; tail -n 5 "$log" >&2
  fi
}

load=$(cut -d' ' -f1-3 /proc/loadavg)
say "$lines records of $value_size bytes, $partitions partitions, broker $broker, $runs run(s) per tool, taking turns (load average $load on $(nproc) cores)"
for t in "${tools[@]}"; do say "$t: ${cmd[$t]}"; done
for run in $(seq 1 "$runs"); do
  say "round $run of $runs"
  for t in "${tools[@]}"; do [ -n "${skip[$t]:-}" ] || run_one "$t" "$run"; done
done

# Summary: per tool, median / min / max time, peak RSS, failures.
stat_of() { # stat_of TOOL: "median min max max_rss n_ok failures own_median"
  awk -F'\t' -v t="$1" '$1 == t && $5 == "ok" { s[++n] = $3; if ($4 > r) r = $4; if ($6 != "") o[++m] = $6 }
    $1 == t && $5 != "ok" { f++ }
    function med(a, k,   i, j, x) { for (i = 2; i <= k; i++) { x = a[i]; for (j = i - 1; j > 0 && a[j] > x; j--) a[j + 1] = a[j]; a[j + 1] = x }
      return k % 2 ? a[(k + 1) / 2] : (a[k / 2] + a[k / 2 + 1]) / 2 }
    END { if (n == 0) { print "- - - - 0", f + 0, "-"; exit }
      mi = ma = s[1]; for (i = 1; i <= n; i++) { if (s[i] < mi) mi = s[i]; if (s[i] > ma) ma = s[i] }
      printf "%.2f %.2f %.2f %d %d %d %s\n", med(s, n), mi, ma, r, n, f + 0, (m ? sprintf("%.0f", med(o, m)) : "-") }' "$results"
}
declare -A med mn mx rss nok nfail own
for t in "${tools[@]}"; do read -r med[$t] mn[$t] mx[$t] rss[$t] nok[$t] nfail[$t] own[$t] < <(stat_of "$t"); done
ratio() { [ "${med[kcat]}" != - ] && [ "${med[$1]}" != - ] && awk -v a="${med[kcat]}" -v b="${med[$1]}" 'BEGIN { printf "%.2f", a / b }' || echo -; }

echo
printf '%-5s %9s %13s %10s %7s %9s %8s  %s\n' tool "median s" "min-max s" "msgs/s" "MB/s" "peak RSS" "vs kcat" settings
json_rows=()
failed=0
for t in "${tools[@]}"; do
  if [ -n "${skip[$t]:-}" ]; then
    printf '%-5s %s\n' "$t" "skipped: ${skip[$t]}"
    json_rows+=("$(jq -n --arg t "$t" --arg s "${skip[$t]}" '{tool: $t, skipped: $s}')"); continue
  fi
  [ "${nfail[$t]}" = 0 ] || failed=1
  if [ "${med[$t]}" = - ]; then
    printf '%-5s %s\n' "$t" "FAILED in all ${nfail[$t]} run(s): see $logs/$t-*.log"
  else
    rate=$(awk -v n="$lines" -v s="${med[$t]}" 'BEGIN { printf "%.0f", n / s }')
    mbs=$(awk -v n="$lines" -v v="$value_size" -v s="${med[$t]}" 'BEGIN { printf "%.1f", n * v / 1e6 / s }')
    printf '%-5s %9s %13s %10s %7s %9s %8s  %s\n' "$t" "${med[$t]}" "${mn[$t]}-${mx[$t]}" "$rate" "$mbs" \
      "$((rss[$t] / 1024)) MiB" "$(ratio "$t")" "${settings[$t]}"
    [ "${nfail[$t]}" = 0 ] || printf '      FAILED in %s of %s runs: see %s/%s-*.log\n' "${nfail[$t]}" "$runs" "$logs" "$t"
  fi
  json_rows+=("$(jq -n --arg t "$t" --arg set "${settings[$t]}" --arg cmd "${cmd[$t]}" --arg med "${med[$t]}" \
    --arg mn "${mn[$t]}" --arg mx "${mx[$t]}" --arg rss "${rss[$t]}" --arg ratio "$(ratio "$t")" --arg own "${own[$t]}" \
    --argjson ok "${nok[$t]}" --argjson nf "${nfail[$t]}" --argjson lines "$lines" --argjson v "$value_size" \
    --argjson runs "$(awk -F'\t' -v t="$t" '$1 == t' "$results" | jq -R -s 'split("\n") | map(select(. != "") | split("\t")
        | {run: (.[1] | tonumber), seconds: (.[2] | tonumber), peak_rss_kib: (.[3] | tonumber), status: .[4]})')" \
    'def num: if . == "-" then null else tonumber end;
     {tool: $t, settings: $set, command: $cmd, runs_ok: $ok, runs_failed: $nf, runs: $runs,
      median_s: ($med | num), min_s: ($mn | num), max_s: ($mx | num), peak_rss_kib: ($rss | num),
      msgs_per_s: (if $med == "-" then null else ($lines / ($med | tonumber) | round) end),
      mb_per_s: (if $med == "-" then null else ($lines * $v / 1e6 / ($med | tonumber) * 10 | round / 10) end),
      kcat_time_over_this: ($ratio | num), own_reported_msgs_per_s: ($own | num)}')")
done

notes=(
  "vs kcat = kcat median wall time / this row's median wall time (above 1: faster than kcat); ours vs kcat: $(ratio ours)"
  "wall times include process start-up, connecting and the final flush; MB/s counts value bytes (100 per record, 10^6 B/MB)"
  "java: ${cmd[java]}"
  "java: ProducerPerformance sends unkeyed random 100-byte values and reads no file; its wall time includes JVM start-up (and the launcher's bash); its own figure (median ${own[java]} msg/s) starts after the KafkaProducer is built and ends after close(), so it leaves out JVM start-up; its own MB/sec is MiB"
  "kcat: ${cmd[kcat]}"
  "ours: ${cmd[ours]}"
  "peak RSS: the highest of any run (for java: the JVM)"
  "load average at the start: $load, at the end: $(cut -d' ' -f1-3 /proc/loadavg) ($(nproc) cores); other work on the machine spreads the times"
)
echo; for n in "${notes[@]}"; do echo "note: $n"; done

commit=$(git rev-parse HEAD 2>/dev/null || echo unknown)
git diff --quiet HEAD 2>/dev/null || commit+="-dirty"
printf '%s\n' "${json_rows[@]}" | jq -s --arg date "$(date -u +%FT%TZ)" --arg commit "$commit" \
  --argjson cores "$(nproc)" --arg cpu "$(awk -F': ' '/model name/ { print $2; exit }' /proc/cpuinfo)" \
  --argjson runs "$runs" --argjson lines "$lines" --argjson v "$value_size" --argjson p "$partitions" \
  --arg broker "$broker" --arg input "$input" --arg notes "$(printf '%s\n' "${notes[@]}")" \
  '{date: $date, git_commit: $commit, machine: {cores: $cores, cpu: $cpu}, runs: $runs, broker: $broker,
    workload: {records: $lines, value_bytes: $v, keys: 1000, partitions: $p, input: $input},
    tools: ., notes: ($notes | rtrimstr("\n") | split("\n"))}' >"$out/produce.json"
say "wrote $out/produce.json (logs in $logs)"
[ "$failed" = 0 ] || die "some runs FAILED (see above)"
