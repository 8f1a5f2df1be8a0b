#!/usr/bin/env bash
# bench/consume.sh (`just bench-consume`; rows 2, 3 and 6 of `just bench`): our
# consumer next to kcat reading a backlog to its end.
#
# What it measures: a 6-partition and a 64-partition topic get BENCH_LINES
# (1,000,000) records from our producer, input as in bench/produce.sh
# (`key-<n mod 1000>|<100-byte value>`). Then, taking turns, BENCH_RUNS (3)
# rounds of reading every record from the beginning and exiting at the end:
#   ours  target/release/consumer --partitions all --from earliest --exit-at-end
#           --stats-interval 0 --format FORMAT BROKER TOPIC --group G   (default workers)
#   kcat  kcat -C -b BROKER -t TOPIC -e -o beginning   (librdkafka)
# into a file on tmpfs (/dev/shm, BENCH_SHM) and into /dev/null; ours also with
# --format json (/dev/null); both at 64 partitions (/dev/null). /usr/bin/time
# gives wall time, CPU seconds (user + sys of the process) and peak RSS. Every
# run is checked: the file's lines, or for /dev/null the count the tool reports
# (ours: its "N handled" summary; kcat: the end offsets of its "Reached end"
# lines, the topics being fresh), must equal BENCH_LINES, or the row fails.
# (kcat runs without -q only so that it prints those lines: one per partition.)
#
# How to read it: per row the median wall time (min-max), msgs/s from it, the
# median CPU seconds and the highest peak RSS of any run. "vs kcat" is kcat's
# median wall time / ours for the same output: above 1 we are faster. CPU
# seconds matter on a shared machine: the broker runs on the same cores, so
# a tool that burns less CPU leaves more to the broker. The same lands in
# target/bench/consume.json.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
BENCH_NAME=bench-consume
# shellcheck source=bench/lib.sh
source bench/lib.sh

consumer=target/release/consumer
producer=target/release/producer
shm=${BENCH_SHM:-/dev/shm}
logs=$out/consume-logs
results=$logs/results.tsv
prefix=bench-consume-$(date +%Y%m%d%H%M%S)
need_tools
[ -x "$consumer" ] && [ -x "$producer" ] || die "$consumer or $producer not found: build them first (just build)"
[ -d "$shm" ] || die "$shm is not there (set BENCH_SHM to a tmpfs directory)"
mkdir -p "$logs"
printf 'name\trun\twall_s\tuser_s\tsys_s\tstatus\trss_kib\tcount\n' >"$results"

kcat_ok=1
ensure_kcat || { kcat_ok=0; say "kcat not installed (Debian/Ubuntu: apt-get install -y kcat): skipping its rows"; }

cleanup() {
  rm -f "$shm/mykafkams-bench-$$.out"
  say "deleting the benchmark topics $prefix-*"
  kafka_tool topics --bootstrap-server "$broker" --delete --topic "$prefix-.*" >/dev/null 2>&1 ||
    say "could not delete the topics $prefix-* (delete them by hand)"
}
trap cleanup EXIT

# The backlogs: one topic per partition count, filled once by our producer.
input=$(bench_input "$lines")
declare -A topic
for p in 6 64; do
  topic[$p]=$prefix-p$p
  kafka_tool topics --bootstrap-server "$broker" --create --topic "${topic[$p]}" \
    --partitions "$p" --replication-factor 1 >/dev/null
  say "filling ${topic[$p]} ($p partitions) with $lines records"
  "$producer" --key-separator '|' --input "$input" "$broker" "${topic[$p]}" >"$logs/fill-p$p.log" 2>&1 ||
    { tail -n 5 "$logs/fill-p$p.log" >&2; die "filling ${topic[$p]} failed"; }
  count=$(kafka_tool get-offsets --bootstrap-server "$broker" --topic "${topic[$p]}" | awk -F: '{ s += $NF } END { print s + 0 }')
  [ "$count" = "$lines" ] || die "${topic[$p]} holds $count records, not $lines"
done

# The rows: name -> "tool format partitions output" (output: file or null).
names=(ours-file kcat-file ours-null kcat-null ours-json ours-p64 kcat-p64)
declare -A spec=(
  [ours-file]="ours value 6 file" [kcat-file]="kcat value 6 file"
  [ours-null]="ours value 6 null" [kcat-null]="kcat value 6 null"
  [ours-json]="ours json 6 null"
  [ours-p64]="ours value 64 null" [kcat-p64]="kcat value 64 null"
)
command_of() { # command_of NAME RUN: the command line, one word per line
  local tool format p sink
  read -r tool format p sink <<<"${spec[$1]}"
  case $tool in
    ours) printf '%s\n' "$consumer" --partitions all --from earliest --exit-at-end --stats-interval 0 \
            --format "$format" "$broker" "${topic[$p]}" --group "$prefix-$1-$2" ;;
    kcat) printf '%s\n' kcat -C -b "$broker" -t "${topic[$p]}" -e -o beginning ;;
  esac
}

# One run: appends name run wall user sys status rss count.
run_one() {
  local name=$1 run=$2 tool format p sink log="$logs/$1-$2.log" tfile="$logs/$1-$2.time" dest rc=0 count
  read -r tool format p sink <<<"${spec[$name]}"
  dest=/dev/null; [ "$sink" = file ] && dest=$shm/mykafkams-bench-$$.out
  local -a cmd; mapfile -t cmd < <(command_of "$name" "$run")
  timed "$tfile" "${cmd[@]}" >"$dest" 2>"$log" || rc=$?
  if [ "$sink" = file ]; then count=$(wc -l <"$dest"); rm -f "$dest"
  elif [ "$tool" = ours ]; then count=$(grep -oE '^consumer: [0-9]+ handled' "$log" | awk '{ print $2 }' | tail -1)
  else count=$(grep -oE 'Reached end of topic .* at offset [0-9]+' "$log" | awk '{ s += $NF; n++ } END { if (n == '"$p"') print s + 0 }')
  fi
  local wall user sys rss status=ok
  read -r wall user sys rss < <(time_of "$tfile")
  if [ "$rc" != 0 ]; then status="FAILED: exit $rc (log: $log)"
  elif [ "${count:-}" != "$lines" ]; then status="FAILED: read ${count:-?} records, not $lines (log: $log)"
  fi
  printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$name" "$run" "$wall" "$user" "$sys" "$status" "$rss" "${count:-}" >>"$results"
  if [ "$status" = ok ]; then
    say "  $name run $run: $wall s, CPU $user+$sys s, peak RSS $((rss / 1024)) MiB, $count records"
  else
    say "  $name run $run: $status"; tail -n 5 "$log" >&2
  fi
}

say "$lines records, broker $broker, $runs round(s), rows take turns; machine: $(machine)"
for run in $(seq 1 "$runs"); do
  say "round $run of $runs"
  for n in "${names[@]}"; do
    [ "${n%%-*}" = kcat ] && [ "$kcat_ok" = 0 ] && continue
    say "  running $n ($run/$runs): $(command_of "$n" "$run" | tr '\n' ' ')"
    run_one "$n" "$run"
  done
done

# Summary: per row median wall (min-max), msgs/s, CPU, RSS.
declare -A med
failed=0
printf '\n%-9s %-6s %4s %-5s %9s %13s %10s %8s %9s %8s\n' row format "p" sink "median s" "min-max s" "msgs/s" "CPU s" "peak RSS" "vs kcat"
json_rows=()
for n in "${names[@]}"; do
  read -r _ format p sink <<<"${spec[$n]}"
  read -r m mi ma ok < <(summarise "$results" "$n" 3)
  med[$n]=$m
done
for n in "${names[@]}"; do
  read -r tool format p sink <<<"${spec[$n]}"
  if [ "$tool" = kcat ] && [ "$kcat_ok" = 0 ]; then printf '%-9s skipped: kcat not installed\n' "$n"; continue; fi
  read -r m mi ma ok < <(summarise "$results" "$n" 3)
  read -r cpu _ _ _ < <(awk -F'\t' 'NR > 1 { $4 = $4 + $5 } 1' OFS='\t' "$results" | summarise /dev/stdin "$n" 4)
  rss=$(awk -F'\t' -v t="$n" '$1 == t && $7 > r { r = $7 } END { print r + 0 }' "$results")
  nf=$(failures "$results" "$n"); [ "$nf" = 0 ] || failed=1
  vs=-
  if [ "$tool" = ours ]; then
    case $n in ours-file) vs=$(ratio "${med[kcat-file]}" "$m") ;; ours-null) vs=$(ratio "${med[kcat-null]}" "$m") ;;
      ours-p64) vs=$(ratio "${med[kcat-p64]}" "$m") ;; esac
  fi
  rate=-; [ "$m" = - ] || rate=$(awk -v n="$lines" -v s="$m" 'BEGIN { printf "%.0f", n / s }')
  printf '%-9s %-6s %4s %-5s %9s %13s %10s %8s %9s %8s%s\n' "$n" "$format" "$p" "$sink" "$m" "$mi-$ma" "$rate" "$cpu" \
    "$((rss / 1024)) MiB" "$vs" "$([ "$nf" = 0 ] || echo "  FAILED in $nf run(s): see $logs/$n-*.log")"
  json_rows+=("$(jq -n --arg n "$n" --arg tool "$tool" --arg f "$format" --argjson p "$p" --arg sink "$sink" \
    --arg cmd "$(command_of "$n" RUN | tr '\n' ' ' | sed 's/ $//')" \
    --arg m "$m" --arg mi "$mi" --arg ma "$ma" --arg cpu "$cpu" --argjson rss "$rss" --arg vs "$vs" \
    --argjson ok "$ok" --argjson nf "$nf" --argjson lines "$lines" --argjson runs "$(rows_json "$results" "$n")" \
    'def num: if . == "-" then null else tonumber end;
     {name: $n, tool: $tool, format: $f, partitions: $p, output: $sink, command: $cmd, runs_ok: $ok, runs_failed: $nf,
      median_s: ($m | num), min_s: ($mi | num), max_s: ($ma | num), median_cpu_s: ($cpu | num), peak_rss_kib: $rss,
      msgs_per_s: (if $m == "-" then null else ($lines / ($m | tonumber) | round) end),
      kcat_time_over_this: ($vs | num), runs: $runs}')")
done
echo "note: vs kcat = kcat's median wall time / ours, same output and partitions (above 1: faster than kcat);"
echo "note: CPU s = median user+sys seconds of the tool's process; file = $shm (tmpfs); load average now $(cut -d' ' -f1-3 /proc/loadavg)"

printf '%s\n' "${json_rows[@]}" | jq -s --arg date "$(date -u +%FT%TZ)" --arg commit "$(git_commit)" \
  --argjson machine "$(machine_json)" --argjson runs "$runs" --argjson lines "$lines" --arg broker "$broker" \
  --arg input "$input" --arg shm "$shm" \
  '{date: $date, git_commit: $commit, machine: $machine, runs: $runs, broker: $broker,
    workload: {records: $lines, value_bytes: 100, keys: 1000, partitions: [6, 64], input: $input, file_dir: $shm},
    rows: .}' >"$out/consume.json"
say "wrote $out/consume.json (logs in $logs)"
[ "$failed" = 0 ] || die "some runs FAILED (see above)"
