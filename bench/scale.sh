#!/usr/bin/env bash
# bench/scale.sh (`just bench-scale`; row 4 and the head-of-line line of
# `just bench`): how throughput grows with workers when each message waits on
# I/O, per scheduler, and what one slow key costs the others.
#
# What it measures: target/release/mykafkams-demo runs (each: produce keyed
# events with per-key sequence numbers into a fresh 6-partition topic, consume
# them in-process with a handler that sleeps --work-ms 1 per message, check
# every key's order and that nothing is lost; exit 6 otherwise). Throughput is
# the demo's: messages / (last handled - first handled), so producing and
# start-up are left out.
#   scaling  1, 16, 64, 128 workers (BENCH_SCALE_WORKERS), 1,000 keys, 1 ms of
#            I/O; events = workers x BENCH_SCALE_EVENTS_PER_WORKER (2,000),
#            at most BENCH_SCALE_MAX_EVENTS (100,000), about 2-5 s a run;
#   head-of-line  64 workers, BENCH_HOL_EVENTS (30,000) events: once as is,
#            once with --slow-key-ms 1000 (the first key's handler takes 1 s a
#            message until every other key is done); the figure is the other
#            keys' throughput, slow run / plain run (target: at least 0.90).
#            A scheduler that queues keys behind the slow one takes about
#            events/keys seconds (30 s) to get there.
#   async    an async handler (--scheduler async: tokio::time::sleep(1 ms) per
#            message) at concurrency BENCH_SCALE_ASYNC ("1 16 64 128 1000"),
#            1,000 keys, concurrency x BENCH_SCALE_EVENTS_PER_WORKER events, at
#            most BENCH_SCALE_ASYNC_EVENTS (300,000); its speed-up is over ONE
#            SYNCHRONOUS worker (the keys scheduler's 1-worker median), target
#            at least 250x at concurrency 1,000 (issue 14);
#   async RSS  10,000 keys at concurrency 10,000 (BENCH_SCALE_ASYNC_EVENTS
#            events): the peak RSS while consuming, as the demo reports it
#            (high-water mark reset when consuming starts), target <= 64 MiB.
# Both schedulers (--scheduler lanes and keys) take turns, BENCH_RUNS (3)
# rounds; a demo without --scheduler runs lanes only (a note says so), one
# without --scheduler async has no async rows.
# Any per-key order violation or loss fails the script loudly (exit 1).
#
# How to read it: per scheduler and worker count the median msg/s (min-max)
# and speed-up = median / the 1-worker median of the same scheduler, next to
# the ideal (N x). With 1 ms sleeps the work is waiting, not CPU, so the
# ideal is reachable until the pipeline itself (or 2 cores) is the limit.
# The same lands in target/bench/scale.json.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
BENCH_NAME=bench-scale
# shellcheck source=bench/lib.sh
source bench/lib.sh

demo=target/release/mykafkams-demo
logs=$out/scale-logs
results=$logs/results.tsv
read -r -a workers_list <<<"${BENCH_SCALE_WORKERS:-1 16 64 128}"
per_worker=${BENCH_SCALE_EVENTS_PER_WORKER:-2000}
max_events=${BENCH_SCALE_MAX_EVENTS:-100000}
hol_events=${BENCH_HOL_EVENTS:-30000}
hol_workers=${BENCH_HOL_WORKERS:-64}
slow_ms=${BENCH_HOL_SLOW_MS:-1000}
keys=1000
read -r -a async_list <<<"${BENCH_SCALE_ASYNC:-1 16 64 128 1000}"
async_events=${BENCH_SCALE_ASYNC_EVENTS:-300000}
rss_keys=10000
need_tools
[ -x "$demo" ] || die "$demo not found: build it first (just build)"
mkdir -p "$logs"
printf 'name\trun\twall_s\tuser_s\tsys_s\tstatus\trss_kib\trate\tevents\tworkers\tscheduler\tothers_rate\tconsume_rss_kib\n' >"$results"

# Which schedulers this build has.
schedulers=(lanes)
note=""
help=$("$demo" --help)   # (not piped into grep -q: under pipefail its early exit would fail the pipe)
if grep -q -- --scheduler <<<"$help"; then
  schedulers=(lanes keys)
else
  note="this build's mykafkams-demo has no --scheduler: lanes only (the keys scheduler is not in it yet)"
  say "note: $note"
fi
sched_args() { [ "${#schedulers[@]}" = 1 ] || echo "--scheduler $1"; }
has_async=0
if grep -q -- "async" <<<"$help"; then has_async=1; else
  note="${note:+$note; }this build's mykafkams-demo has no --scheduler async: no async rows"
fi

events_for() { local e=$(( $1 * per_worker )); echo $(( e > max_events ? max_events : (e < keys ? keys : e) )); }
async_events_for() { local e=$(( $1 * per_worker )); echo $(( e > async_events ? async_events : (e < keys ? keys : e) )); }

# Topics the demo made, deleted at the end (by exact name: the broker is shared).
topics_file=$logs/topics.txt
: >"$topics_file"
cleanup() {
  [ -s "$topics_file" ] || return 0
  say "deleting the $(wc -l <"$topics_file") demo topic(s) of this run"
  while read -r t; do
    kafka_tool topics --bootstrap-server "$broker" --delete --topic "$t" >/dev/null 2>&1 || say "could not delete $t"
  done <"$topics_file"
}
trap cleanup EXIT

# run_one NAME RUN SCHEDULER WORKERS EVENTS [extra demo args]: one demo run
# (RUN_KEYS overrides the number of keys).
failed=0
run_one() {
  local name=$1 run=$2 sched=$3 w=$4 events=$5; shift 5
  local log="$logs/$name-$run.log" json="$logs/$name-$run.json" tfile="$logs/$name-$run.time" rc=0
  local sargs; if [ "$sched" = async ]; then sargs="--scheduler async"; else sargs=$(sched_args "$sched"); fi
  # shellcheck disable=SC2086
  timed "$tfile" "$demo" --brokers "$broker" --events "$events" --keys "${RUN_KEYS:-$keys}" --workers "$w" --work-ms 1 \
    --sample 0 --json $sargs "$@" >"$json" 2>"$log" || rc=$?
  grep -oE "to 'mykafkams-demo-[0-9]+'" "$log" | tr -d "'" | awk '{ print $2 }' >>"$topics_file" || true
  local wall user sys rss rate="" others="" crss="" status=ok viol=0 lost=0 handled=0
  read -r wall user sys rss < <(time_of "$tfile")
  if [ -s "$json" ] && jq -e . "$json" >/dev/null 2>&1; then
    rate=$(jq -r '.rate | floor' "$json"); others=$(jq -r '.others_rate // "" | if . == "" then . else floor end' "$json")
    crss=$(jq -r '.consume_peak_rss_kib // ""' "$json")
    read -r viol lost handled < <(jq -r '"\(.order_violations) \(.lost) \(.handled)"' "$json")
    if [ "$viol" != 0 ] || [ "$lost" != 0 ]; then
      status="FAILED: $viol per-key order violation(s), $lost lost (log: $log)"
    elif [ "$handled" -lt "$events" ]; then status="FAILED: handled $handled of $events (log: $log)"
    fi
  fi
  [ "$rc" = 0 ] || [ "$status" != ok ] || status="FAILED: exit $rc (log: $log)"
  [ "$status" = ok ] || failed=1
  printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$name" "$run" "$wall" "$user" "$sys" "$status" "$rss" \
    "$rate" "$events" "$w" "$sched" "$others" "$crss" >>"$results"
  if [ "$status" = ok ]; then
    say "    $name run $run: ${rate} msg/s${others:+, other keys $others msg/s}${crss:+, peak RSS consuming $((crss / 1024)) MiB} ($events events, $wall s in all)"
  else
    say "    $name run $run: $status"; tail -n 5 "$log" >&2
    [ "${viol:-0}" = 0 ] || say "PER-KEY ORDER VIOLATED: $viol time(s) in $name run $run (see $log)"
  fi
}

say "demo runs on broker $broker, $runs round(s), schedulers: ${schedulers[*]}; machine: $(machine)"
for run in $(seq 1 "$runs"); do
  say "round $run of $runs: scaling"
  for w in "${workers_list[@]}"; do
    for s in "${schedulers[@]}"; do
      say "  $s, $w worker(s), $(events_for "$w") events ($run/$runs)"
      run_one "$s-w$w" "$run" "$s" "$w" "$(events_for "$w")"
    done
  done
  if [ "$has_async" = 1 ]; then
    say "round $run of $runs: async handler"
    for c in "${async_list[@]}"; do
      say "  async, concurrency $c, $(async_events_for "$c") events ($run/$runs)"
      run_one "async-c$c" "$run" async "$c" "$(async_events_for "$c")"
    done
    say "  async, $rss_keys keys at concurrency $rss_keys, $async_events events ($run/$runs)"
    RUN_KEYS=$rss_keys run_one "async-rss" "$run" async "$rss_keys" "$async_events"
  fi
  say "round $run of $runs: head-of-line ($hol_workers workers, $hol_events events, slow key ${slow_ms} ms)"
  for s in "${schedulers[@]}"; do
    say "  $s, plain ($run/$runs)"
    run_one "$s-hol-plain" "$run" "$s" "$hol_workers" "$hol_events"
    say "  $s, slow key ($run/$runs)"
    run_one "$s-hol-slow" "$run" "$s" "$hol_workers" "$hol_events" --slow-key-ms "$slow_ms"
  done
done

# The table. Medians over ok runs; rate is column 8, the other keys' rate column 12.
printf '\n%-9s %7s %8s %10s %15s %9s %7s\n' scheduler workers events "msgs/s" "min-max" speed-up ideal
json_rows=()
declare -A one
for s in "${schedulers[@]}"; do
  for w in "${workers_list[@]}"; do
    n=$s-w$w
    read -r m mi ma ok < <(summarise "$results" "$n" 8)
    [ "$w" = 1 ] && one[$s]=$m
    sp=$(ratio "$m" "${one[$s]:--}")
    nf=$(failures "$results" "$n")
    printf '%-9s %7s %8s %10s %15s %9s %7s%s\n' "$s" "$w" "$(events_for "$w")" "$m" "$mi-$ma" "${sp}x" "${w}x" \
      "$([ "$nf" = 0 ] || echo "  FAILED in $nf run(s): see $logs/$n-*.log")"
    json_rows+=("$(jq -n --arg s "$s" --argjson w "$w" --argjson e "$(events_for "$w")" --arg m "$m" --arg mi "$mi" \
      --arg ma "$ma" --arg sp "$sp" --argjson ok "$ok" --argjson nf "$nf" --argjson runs "$(rows_json "$results" "$n")" \
      'def num: if . == "-" then null else tonumber end;
       {kind: "scaling", scheduler: $s, workers: $w, events: $e, median_msgs_per_s: ($m | num), min: ($mi | num),
        max: ($ma | num), speedup_over_1: ($sp | num), ideal: $w, runs_ok: $ok, runs_failed: $nf, runs: $runs}')")
  done
done
if [ "$has_async" = 1 ]; then
  echo
  printf '%-34s %10s %15s %18s %9s %s\n' "async handler (1 ms async I/O)" "msgs/s" "min-max" "1 sync worker" speed-up "target >= 250x"
  for c in "${async_list[@]}"; do
    n=async-c$c
    read -r m mi ma ok < <(summarise "$results" "$n" 8)
    sp=$(ratio "$m" "${one[keys]:--}")
    verdict=-; [ "$sp" = - ] || [ "$c" -lt 1000 ] || verdict=$(awk -v r="$sp" 'BEGIN { print (r >= 250 ? "met" : "missed") }')
    nf=$(failures "$results" "$n")
    printf '%-34s %10s %15s %18s %9s %s%s\n' "concurrency $c, 1,000 keys" "$m" "$mi-$ma" "${one[keys]:--}" "${sp}x" "$verdict" \
      "$([ "$nf" = 0 ] || echo "  FAILED in $nf run(s): see $logs/$n-*.log")"
    json_rows+=("$(jq -n --argjson c "$c" --argjson e "$(async_events_for "$c")" --arg m "$m" --arg mi "$mi" --arg ma "$ma" \
      --arg one "${one[keys]:--}" --arg sp "$sp" --arg v "$verdict" --argjson nf "$nf" --argjson runs "$(rows_json "$results" "$n")" \
      'def num: if . == "-" then null else tonumber end;
       {kind: "async", scheduler: "async", concurrency: $c, keys: 1000, events: $e, median_msgs_per_s: ($m | num),
        min: ($mi | num), max: ($ma | num), one_sync_worker_msgs_per_s: ($one | num), speedup_over_one_sync_worker: ($sp | num),
        target: 250, verdict: $v, runs_failed: $nf, runs: $runs}')")
  done
  read -r rm rmi rma rok < <(summarise "$results" async-rss 13)
  rmib=-; [ "$rm" = - ] || rmib=$(( ${rm%.*} / 1024 ))
  verdict=-; [ "$rm" = - ] || verdict=$(awk -v k="$rm" 'BEGIN { print (k <= 64 * 1024 ? "met" : "missed") }')
  read -r xm xmi xma xok < <(summarise "$results" async-rss 8)
  printf '%-34s %10s %15s %18s %9s %s\n' "$rss_keys keys, concurrency $rss_keys" "$xm" "$xmi-$xma" "peak RSS consuming" "${rmib} MiB" "$verdict (target <= 64 MiB)"
  json_rows+=("$(jq -n --argjson k "$rss_keys" --argjson e "$async_events" --arg rm "$rm" --arg rmi "$rmi" --arg rma "$rma" \
    --arg xm "$xm" --arg v "$verdict" --argjson runs "$(rows_json "$results" async-rss)" \
    'def num: if . == "-" then null else tonumber end;
     {kind: "async_rss", scheduler: "async", concurrency: $k, keys: $k, events: $e, median_msgs_per_s: ($xm | num),
      consume_peak_rss_kib: ($rm | num), min_kib: ($rmi | num), max_kib: ($rma | num), target_kib: 65536, verdict: $v,
      runs: $runs}')")
fi
echo
printf '%-9s %-38s %12s %12s %8s %s\n' scheduler "head-of-line ($hol_workers workers, 1 slow key)" "plain msg/s" "slow: others" "ratio" "target >= 0.90"
for s in "${schedulers[@]}"; do
  read -r pm pmi pma pok < <(summarise "$results" "$s-hol-plain" 8)
  read -r sm smi sma sok < <(summarise "$results" "$s-hol-slow" 12)
  r=$(ratio "$sm" "$pm")
  verdict=-; [ "$r" = - ] || verdict=$(awk -v r="$r" 'BEGIN { print (r >= 0.9 ? "met" : "missed") }')
  printf '%-9s %-38s %12s %12s %8s %s\n' "$s" "other keys' msg/s, slow run / plain run" "$pm" "$sm" "$r" "$verdict"
  json_rows+=("$(jq -n --arg s "$s" --argjson w "$hol_workers" --argjson e "$hol_events" --argjson slow "$slow_ms" \
    --arg pm "$pm" --arg sm "$sm" --arg r "$r" --arg v "$verdict" \
    --argjson pr "$(rows_json "$results" "$s-hol-plain")" --argjson sr "$(rows_json "$results" "$s-hol-slow")" \
    'def num: if . == "-" then null else tonumber end;
     {kind: "head_of_line", scheduler: $s, workers: $w, events: $e, slow_key_ms: $slow, plain_median_msgs_per_s: ($pm | num),
      slow_run_others_median_msgs_per_s: ($sm | num), ratio: ($r | num), target: 0.9, verdict: $v,
      plain_runs: $pr, slow_runs: $sr}')")
done
[ -z "$note" ] || echo "note: $note"

printf '%s\n' "${json_rows[@]}" | jq -s --arg date "$(date -u +%FT%TZ)" --arg commit "$(git_commit)" \
  --argjson machine "$(machine_json)" --argjson runs "$runs" --arg broker "$broker" --arg note "$note" \
  --argjson pw "$per_worker" --argjson me "$max_events" \
  '{date: $date, git_commit: $commit, machine: $machine, runs: $runs, broker: $broker,
    workload: {keys: 1000, work_ms: 1, partitions: 6, events_per_worker: $pw, max_events: $me},
    note: (if $note == "" then null else $note end), rows: .}' >"$out/scale.json"
say "wrote $out/scale.json (logs in $logs)"
[ "$failed" = 0 ] || die "some runs FAILED (see above)"
