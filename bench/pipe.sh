#!/usr/bin/env bash
# bench/pipe.sh (`just bench-pipe`; the pipe rows of `just bench`): handlers
# in another language, --handler pipe against --handler exec.
#
# What it measures: our consumer (target/release/consumer) reads a keyed
# topic (1,000 keys, 6 partitions) to its end (--exit-at-end, fresh group),
# with:
#   exec      --handler exec -- true: a process per message, over
#             BENCH_PIPE_EXEC_MESSAGES (3,000) messages;
#   pipe-ok   --handler pipe, 2 processes x 256 in flight, a Python asyncio
#             process (bench/pipe_handler.py) answering "ok" at once, over
#             BENCH_PIPE_MESSAGES (100,000) messages;
#   pipe-1ms  the same process sleeping 1 ms per message (asyncio.sleep):
#             1 process at --pipe-inflight 16, 64 and 256 (the scaling chart's
#             pipe line), and 2 processes at 256.
# The rate is the consumer's own summary figure (handled / its run time).
# Every run must handle every message (its summary says so; it fails
# otherwise). The runs take turns, BENCH_RUNS (3) rounds; medians.
#
# How to read it: issue 14's targets are pipe-ok at least 50x exec, and
# pipe-1ms (asyncio, in flight 256) at least 20,000 msg/s. The same lands in
# target/bench/pipe.json.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
BENCH_NAME=bench-pipe
# shellcheck source=bench/lib.sh
source bench/lib.sh

consumer=target/release/consumer
producer=target/release/producer
logs=$out/pipe-logs
results=$logs/results.tsv
n_pipe=${BENCH_PIPE_MESSAGES:-100000}
n_exec=${BENCH_PIPE_EXEC_MESSAGES:-3000}
prefix=bench-pipe-$(date +%Y%m%d%H%M%S)
need_tools
command -v python3 >/dev/null || die "python3 is needed for the pipe handler"
[ -x "$consumer" ] && [ -x "$producer" ] || die "build first (just build)"
mkdir -p "$logs"
printf 'name\trun\twall_s\tuser_s\tsys_s\tstatus\trss_kib\trate\tmessages\tprocesses\tinflight\n' >"$results"

cleanup() {
  kafka_tool topics --bootstrap-server "$broker" --delete --topic "$prefix-.*" >/dev/null 2>&1 ||
    say "could not delete the topics $prefix-* (delete them by hand)"
}
trap cleanup EXIT

# topic NAME COUNT: a 6-partition topic of COUNT keyed lines.
topic() {
  kafka_tool topics --bootstrap-server "$broker" --create --topic "$1" --partitions 6 >/dev/null
  seq 1 "$2" | awk '{ print "k" ($1 % 1000) "|v" $1 }' |
    "$producer" "$broker" "$1" unused --key-separator '|' 2>>"$logs/produce.log" >/dev/null
}

# run_one NAME RUN TOPIC COUNT HANDLER-ARGS...: one consumer run.
run_one() {
  local name=$1 run=$2 t=$3 count=$4; shift 4
  local log="$logs/$name-$run.log" tfile="$logs/$name-$run.time" rc=0 status=ok rate=""
  timed "$tfile" "$consumer" "$broker" "$t" "$prefix-g-$name-$run" --partitions all --from earliest \
    --exit-at-end --stats-interval 0 "$@" >/dev/null 2>"$log" || rc=$?
  local wall user sys rss; read -r wall user sys rss < <(time_of "$tfile")
  local summary; summary=$(grep -E '^consumer: [0-9]+ handled' "$log" | tail -n 1 || true)
  rate=$(sed -nE 's/.*\(([0-9]+) msg\/s\).*/\1/p' <<<"$summary")
  local handled; handled=$(sed -nE 's/^consumer: ([0-9]+) handled.*/\1/p' <<<"$summary")
  if [ "$rc" != 0 ]; then status="FAILED: exit $rc (log: $log)"
  elif [ "${handled:-0}" != "$count" ]; then status="FAILED: handled ${handled:-0} of $count (log: $log)"
  fi
  local procs inflight
  procs=$(sed -nE 's/.*--pipe-processes ([0-9]+).*/\1/p' <<<"$*"); inflight=$(sed -nE 's/.*--pipe-inflight ([0-9]+).*/\1/p' <<<"$*")
  printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$name" "$run" "$wall" "$user" "$sys" "$status" "$rss" \
    "$rate" "$count" "${procs:-}" "${inflight:-}" >>"$results"
  if [ "$status" = ok ]; then say "    $name run $run: $rate msg/s ($count messages, $wall s)"; else
    say "    $name run $run: $status"; tail -n 3 "$log" >&2; failed=1; fi
}

failed=0
say "producing $n_pipe + $n_exec keyed messages (topics $prefix-*); machine: $(machine)"
topic "$prefix-pipe" "$n_pipe"
topic "$prefix-exec" "$n_exec"
handler=(python3 bench/pipe_handler.py)
for run in $(seq 1 "$runs"); do
  say "round $run of $runs"
  run_one exec "$run" "$prefix-exec" "$n_exec" --handler exec -- true
  run_one pipe-ok "$run" "$prefix-pipe" "$n_pipe" --handler pipe --pipe-processes 2 --pipe-inflight 256 -- "${handler[@]}" 0
  for m in 16 64 256; do
    run_one "pipe-1ms-p1-m$m" "$run" "$prefix-pipe" "$n_pipe" --handler pipe --pipe-processes 1 --pipe-inflight "$m" -- "${handler[@]}" 1
  done
  run_one pipe-1ms-p2-m256 "$run" "$prefix-pipe" "$n_pipe" --handler pipe --pipe-processes 2 --pipe-inflight 256 -- "${handler[@]}" 1
done

printf '\n%-52s %10s %15s %10s %s\n' "handler (1,000 keys, 6 partitions)" "msgs/s" "min-max" "ratio" "target"
read -r em emi ema _ < <(summarise "$results" exec 8)
json_rows=()
row() { # NAME LABEL RATIO TARGET VERDICT [PROCESSES INFLIGHT]
  local m mi ma ok; read -r m mi ma ok < <(summarise "$results" "$1" 8)
  printf '%-52s %10s %15s %10s %s\n' "$2" "$m" "$mi-$ma" "$3" "$4${5:+ ($5)}"
  json_rows+=("$(jq -n --arg n "$1" --arg l "$2" --arg m "$m" --arg mi "$mi" --arg ma "$ma" --arg r "$3" --arg t "$4" \
    --arg v "${5:-}" --arg p "${6:-}" --arg i "${7:-}" --argjson runs "$(rows_json "$results" "$1")" \
    'def num: if . == "-" or . == "" then null else tonumber end;
     {name: $n, what: $l, median_msgs_per_s: ($m | num), min: ($mi | num), max: ($ma | num), ratio: $r, target: $t,
      verdict: (if $v == "" then null else $v end), processes: ($p | num), inflight: ($i | num), runs: $runs}')")
}
verdict() { awk -v a="$1" -v b="$2" 'BEGIN { print (a == "-" ? "-" : (a + 0 >= b ? "met" : "missed")) }'; }
row exec "exec -- true (a process per message)" "1x" "-"
read -r om _ < <(summarise "$results" pipe-ok 8)
r=$(ratio "$om" "$em")
row pipe-ok "pipe, Python answering at once, 2 x 256 in flight" "${r}x exec" ">= 50x exec" "$(verdict "$r" 50)" 2 256
for m in 16 64; do
  row "pipe-1ms-p1-m$m" "pipe, Python asyncio 1 ms, 1 x $m in flight" "-" "-" "" 1 "$m"
done
read -r pm1 _ < <(summarise "$results" pipe-1ms-p1-m256 8)
row pipe-1ms-p1-m256 "pipe, Python asyncio 1 ms, 1 x 256 in flight" "-" ">= 20,000 msg/s" "$(verdict "$pm1" 20000)" 1 256
read -r pm2 _ < <(summarise "$results" pipe-1ms-p2-m256 8)
row pipe-1ms-p2-m256 "pipe, Python asyncio 1 ms, 2 x 256 in flight" "-" ">= 20,000 msg/s" "$(verdict "$pm2" 20000)" 2 256

printf '%s\n' "${json_rows[@]}" | jq -s --arg date "$(date -u +%FT%TZ)" --arg commit "$(git_commit)" \
  --argjson machine "$(machine_json)" --argjson runs "$runs" --argjson np "$n_pipe" --argjson ne "$n_exec" \
  '{date: $date, git_commit: $commit, machine: $machine, runs: $runs,
    workload: {keys: 1000, partitions: 6, pipe_messages: $np, exec_messages: $ne}, rows: .}' >"$out/pipe.json"
say "wrote $out/pipe.json (logs in $logs)"
[ "$failed" = 0 ] || die "some runs FAILED (see above)"
