#!/usr/bin/env bash
# bench/bench.sh (`just bench`): the side-by-side table of issue 13 in one run.
#
# What it measures: it runs the four benchmark scripts in turn, each of which
# alternates the tools it compares and takes the median of BENCH_RUNS (3) runs,
# then prints one table and writes it to target/bench/bench.json:
#   1    produce 1 M keyed lines: ours vs kcat -P -K (and Java)   bench/produce.sh
#   2    consume 1 M raw to a tmpfs file and to /dev/null, with CPU seconds:
#        ours vs kcat -C -e                                        bench/consume.sh
#   3    consume 1 M with --format value and --format json        bench/consume.sh
#   4    1 ms of I/O, 1,000 keys: 1/16/64/128 workers per scheduler, speed-up
#        over 1 worker vs the ideal N x (per-key order checked), and an async
#        handler at concurrency 1,000 vs one synchronous worker      bench/scale.sh
#   HOL  one key taking 1 s a message, 64 workers: the other keys'
#        throughput vs a run without it (target within 10 %)      bench/scale.sh
#   pipe --handler pipe (Python asyncio) vs --handler exec -- true  bench/pipe.sh
#   5    end-to-end latency p50/p99/p99.9 at 10,000 msg/s          bench/latency.sh
#   6    peak RSS of the consumer (6 and 64 partitions, 1 M backlog) and the
#        producer, from the runs of rows 1 and 2; of an async handler at
#        10,000 keys and concurrency 10,000 (bench/scale.sh)
#   core the ordering core next to a raw channel (benches/core.rs, `just
#        bench-core`; no broker, seconds), printed below the table
# Each script's own, more detailed table goes to target/bench/<name>.txt, its
# JSON to target/bench/<name>.json, its per-run logs to target/bench/<name>-logs/.
# Knobs: BENCH_RUNS, BENCH_LINES, and those named at the top of each script
# (BENCH_SCALE_*, BENCH_HOL_*, BENCH_LATENCY_*); BENCH_ONLY="consume scale"
# runs a subset (the table then shows what the last runs of the others left);
# the parts are core produce consume scale pipe latency.
#
# How to read it: "ours" is our median (min-max over the runs); "compared
# with" the other tool's median under the same workload; "ratio" is how many
# times faster we are (other's time / ours; for row 4 the speed-up, next to
# the ideal). A run that loses a message or breaks a key's order fails its
# script; the table is still printed, and the script exits 1.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
BENCH_NAME=bench
# shellcheck source=bench/lib.sh
source bench/lib.sh
need_tools

parts=(${BENCH_ONLY:-core produce consume scale pipe latency})
started=$(date -u +%FT%TZ)
say "machine: $(machine)"
say "settings: BENCH_RUNS=$runs BENCH_LINES=$lines, broker $broker; parts: ${parts[*]}"
mkdir -p "$out"
failed=()
# core: the ordering core next to a raw channel (benches/core.rs, what `just
# bench-core` runs; no broker, seconds); its table is printed below ours.
run_core() { local exe; exe=$(bench_exe core) && "$exe"; }
for p in "${parts[@]}"; do
  rm -f "$out/$p.json"
  if [ "$p" = core ]; then
    say "=== core (benches/core.rs; its table: $out/core.txt)"
    run_core >"$out/core.txt" || { failed+=(core); say "=== core FAILED (see $out/core.txt)"; }
    continue
  fi
  say "=== $p (bench/$p.sh; its table: $out/$p.txt)"
  if ! "bench/$p.sh" >"$out/$p.txt"; then failed+=("$p"); say "=== $p FAILED (see above and $out/$p.txt)"; fi
done

# The scaling chart from the parts' JSON (benches/chart.rs): target/bench/scaling.svg.
if exe=$(bench_exe chart 2>/dev/null); then "$exe" || say "the chart could not be drawn"; else say "benches/chart.rs did not build: no chart"; fi

# Each part's JSON, or null when it is missing.
part() { if [ -s "$out/$1.json" ]; then cat "$out/$1.json"; else echo null; fi; }

# The rows, built from the parts' JSON: [row, what, ours, compared with, ratio].
rows=$(jq -n --argjson produce "$(part produce)" --argjson consume "$(part consume)" \
  --argjson scale "$(part scale)" --argjson latency "$(part latency)" --argjson pipe "$(part pipe)" --argjson lines "$lines" '
  def f(n): if . == null then "-" else (. * pow(10; n) | round / pow(10; n) | tostring) end;
  def secs: "\(.median_s | f(2)) s (\(.min_s | f(2))-\(.max_s | f(2)))";
  def mib: if . == null then "-" else "\(. / 1024 | round) MiB" end;
  def k: if . == null then "-" elif . >= 1e6 then (. / 1e6 | f(2)) + " M" else (. / 1000 | f(1)) + "k" end;
  def f1: if . == null then "-" else (. * 10 | round) as $t | "\($t / 10 | floor).\($t % 10)" end;
  def commas: tostring | if length > 3 then (.[:-3] | commas) + "," + .[-3:] else . end;
  def row(n; what; ours; other; ratio; data): {row: n, what: what, ours: ours, compared_with: other, ratio: ratio, data: data};
  def tool($t): ($produce.tools // [] | map(select(.tool == $t)) | first);
  def crow($n): ($consume.rows // [] | map(select(.name == $n)) | first);
  [
    # 1: produce
    (tool("ours") as $o | tool("kcat") as $k | tool("java") as $j | select($o != null) |
      row("1"; "produce \($produce.workload.records | commas) keyed lines (100 B, 6 partitions)";
        "\($o | secs), \($o.msgs_per_s | k) msg/s";
        (if $k.median_s then "kcat -P -K: \($k | secs)" else "kcat: \($k.skipped // "-")" end);
        (if $o.kcat_time_over_this then "\($o.kcat_time_over_this)x kcat" else "-" end); {ours: $o, kcat: $k}),
      (select($j.median_s != null) | row("1"; "  same, Java ProducerPerformance (unkeyed, JVM start included)"; "";
        "java: \($j | secs)"; "\(($j.median_s / $o.median_s) | f(2))x java"; {java: $j}))),
    # 2 and 3: consume
    (select($consume != null) | ($consume.workload.records | commas) as $n |
      ([["ours-file", "kcat-file", "2", "consume \($n) raw to a file (tmpfs)"],
        ["ours-null", "kcat-null", "2", "consume \($n) raw to /dev/null"],
        ["ours-null", null, "3", "consume \($n) --format value (/dev/null)"],
        ["ours-json", null, "3", "consume \($n) --format json (/dev/null)"]][] as [$a, $b, $r, $what] |
        crow($a) as $o | (if $b then crow($b) else null end) as $k | select($o != null) |
        row($r; $what; "\($o | secs), CPU \($o.median_cpu_s | f(2)) s, \($o.msgs_per_s | k) msg/s";
          (if $b == null then "-" elif $k == null or $k.median_s == null then "kcat: not run"
           else "kcat -C -e: \($k | secs), CPU \($k.median_cpu_s | f(2)) s" end);
          (if $b and $o.kcat_time_over_this then "\($o.kcat_time_over_this)x kcat" else "-" end); {ours: $o, kcat: $k}))),
    # 4: scaling
    (select($scale != null) | $scale.rows[] | select(.kind == "scaling") |
      row("4"; "\(.scheduler), \(.workers) worker(s), 1 ms I/O, 1,000 keys (\(.events | commas) events)";
        "\(.median_msgs_per_s | k) msg/s (\(.min | k)-\(.max | k))"; "ideal \(.ideal)x";
        "\(.speedup_over_1 | f1)x"; .)),
    (select($scale != null) | $scale.rows[] | select(.kind == "async") |
      row("4"; "async handler, concurrency \(.concurrency), 1 ms async I/O, 1,000 keys (\(.events | commas) events)";
        "\(.median_msgs_per_s | k) msg/s (\(.min | k)-\(.max | k))"; "1 sync worker: \(.one_sync_worker_msgs_per_s | k) msg/s; target >= 250x";
        "\(.speedup_over_one_sync_worker | f1)x (\(.verdict))"; .)),
    (select($scale.note != null) | row("4"; "  note: \($scale.note)"; ""; ""; ""; null)),
    # HOL
    (select($scale != null) | $scale.rows[] | select(.kind == "head_of_line") |
      row("HOL"; "\(.scheduler): 1 key at \(.slow_key_ms) ms/msg, \(.workers) workers: other keys vs no slow key";
        "\(.slow_run_others_median_msgs_per_s | k) msg/s vs \(.plain_median_msgs_per_s | k)"; "target >= 0.90";
        "\(.ratio | f(2)) (\(.verdict))"; .)),
    # pipe
    (select($pipe != null) | $pipe.rows[] |
      row("pipe"; "\(.what), \(.runs[0].messages // 0 | commas) messages";
        "\(.median_msgs_per_s | k) msg/s (\(.min | k)-\(.max | k))";
        (if .name == "exec" then "-" else "target \(.target)" end);
        (if .ratio == "-" then (.verdict // "-") else "\(.ratio) (\(.verdict // "-"))" end); .)),
    # 5: latency
    (select($latency != null) | $latency |
      row("5"; "end-to-end latency at \(.target_msgs_per_s | commas) msg/s (sent at \(.sent_msgs_per_s.median | k))";
        "p50 \(.p50_ms.median | f(1)) ms, p99 \(.p99_ms.median | f(1)) ms, p99.9 \(.p999_ms.median | f(1)) ms"; "-";
        "-"; .)),
    # 6: peak RSS
    (select($consume != null) |
      (crow("ours-null") as $o | crow("kcat-null") as $k | select($o != null) |
        row("6"; "peak RSS, consumer, 6 partitions, \($consume.workload.records | commas) backlog"; $o.peak_rss_kib | mib;
          (if $k.median_s then "kcat: \($k.peak_rss_kib | mib)" else "-" end); "-"; {ours: $o.peak_rss_kib, kcat: $k.peak_rss_kib})),
      (crow("ours-p64") as $o | crow("kcat-p64") as $k | select($o != null) |
        row("6"; "peak RSS, consumer, 64 partitions, \($consume.workload.records | commas) backlog"; $o.peak_rss_kib | mib;
          (if $k.median_s then "kcat: \($k.peak_rss_kib | mib)" else "-" end); "-"; {ours: $o.peak_rss_kib, kcat: $k.peak_rss_kib}))),
    (select($scale != null) | $scale.rows[] | select(.kind == "async_rss") |
      row("6"; "peak RSS while consuming, async handler, \(.keys | commas) keys, concurrency \(.concurrency | commas)";
        (.consume_peak_rss_kib | mib); "target <= 64 MiB"; .verdict; .)),
    (tool("ours") as $o | tool("kcat") as $k | select($o != null) |
      row("6"; "peak RSS, producer, \($produce.workload.records | commas) lines"; $o.peak_rss_kib | mib;
        (if $k.median_s then "kcat: \($k.peak_rss_kib | mib)" else "-" end); "-"; {ours: $o.peak_rss_kib, kcat: $k.peak_rss_kib}))
  ]')

# The table: one line per row, columns padded to their widest cell.
echo
echo "MyKafkaMS benchmarks: $(machine)"
echo "commit $(git_commit), $started; medians of BENCH_RUNS=$runs run(s), tools taking turns; BENCH_LINES=$lines"
echo
jq -r '(["#", "what", "ours (median, min-max)", "compared with", "ratio"] | @tsv),
  (.[] | [.row, .what, .ours, .compared_with, .ratio] | @tsv)' <<<"$rows" |
  awk -F'\t' '{ for (i = 1; i <= NF; i++) { c[NR, i] = $i; if (length($i) > w[i]) w[i] = length($i) } n = NR }
    END { for (r = 1; r <= n; r++) { line = "|"; for (i = 1; i <= 5; i++) line = line sprintf(" %-*s |", w[i], c[r, i]); print line
            if (r == 1) { line = "|"; for (i = 1; i <= 5; i++) { d = ""; while (length(d) < w[i] + 2) d = d "-"; line = line d "|" } print line } } }'
echo
echo "ratio: rows 1-2 = the other tool's median wall time / ours (above 1: we are faster); row 4 = speed-up over 1 worker"
echo "of the same scheduler (ideal N x); HOL = other keys' msg/s with the slow key / without it. CPU = user+sys seconds."
echo "Details per part: $out/{produce,consume,scale,latency}.txt and .json; logs in $out/*-logs/."
if [ -s "$out/core.txt" ]; then
  echo
  echo "Ordering core (benches/core.rs, no broker: the pool next to a raw channel's ceiling):"
  grep '^|' "$out/core.txt" || cat "$out/core.txt"
fi
[ "${#failed[@]}" = 0 ] || echo "FAILED: ${failed[*]} (their rows are missing or incomplete; see the progress above)"

jq -n --arg date "$started" --arg commit "$(git_commit)" --argjson machine "$(machine_json)" \
  --argjson runs "$runs" --argjson lines "$lines" --arg broker "$broker" --argjson rows "$rows" \
  --arg failed "${failed[*]}" \
  --argjson produce "$(part produce)" --argjson consume "$(part consume)" \
  --argjson scale "$(part scale)" --argjson latency "$(part latency)" \
  '{date: $date, git_commit: $commit, machine: $machine, broker: $broker,
    settings: {runs: $runs, lines: $lines, env: ($ENV | with_entries(select(.key | startswith("BENCH_"))))},
    failed: ($failed | split(" ") | map(select(. != ""))), rows: $rows,
    parts: {produce: $produce, consume: $consume, scale: $scale, latency: $latency}}' >"$out/bench.json"
say "wrote $out/bench.json"
[ "${#failed[@]}" = 0 ] || exit 1
