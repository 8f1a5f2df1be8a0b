# bench/lib.sh: what the benchmark scripts share (sourced, not run).
#
# - say/die: progress and errors on stderr, prefixed with the script's name;
# - machine: one line naming the CPU, cores, kernel and load;
# - bench_input LINES: the keyed input file of bench/produce.sh
#   (`key-<n mod 1000>|<100-byte value>`), made once and reused;
# - timed OUT CMD...: runs CMD under /usr/bin/time, the figures land in OUT
#   as "wall user sys maxrss_kib";
# - summarise TSV NAME COL: "median min max n" of column COL over the rows
#   of TSV whose first column is NAME and whose status column (5) is ok;
# - kafka_tool: Kafka's own tools (what `just kafka-tool` runs);
# - bench_exe NAME: builds benches/NAME.rs as `cargo bench` does (its bench
#   profile, shared with `just bench-core` and `just bench-rebalance`) and
#   prints the executable's path; the first build of that profile takes as
#   long as `cargo build --release`.
#
# Results files are tab separated, one row per run:
#   name  run  wall_s  user_s  sys_s  status  rss_kib  extra...
# (columns 1-7 fixed; scripts may append their own).

BENCH_NAME=${BENCH_NAME:-bench}
broker=${KAFKA_BOOTSTRAP:-127.0.0.1:9092}
runs=${BENCH_RUNS:-3}
lines=${BENCH_LINES:-1000000}
out=target/bench

say() { echo "$BENCH_NAME: $*" >&2; }
die() { say "$*"; exit 1; }
kafka_tool() { docker/kafka-local.sh tool "$@"; }

need_tools() {
  command -v jq >/dev/null || die "jq not found (Debian: apt-get install -y jq)"
  [ -x /usr/bin/time ] || die "/usr/bin/time not found (Debian: apt-get install -y time)"
}

# kcat, installed if missing and apt-get can (as a fresh Debian clone needs).
ensure_kcat() {
  command -v kcat >/dev/null && return 0
  if command -v apt-get >/dev/null && [ "$(id -u)" = 0 ]; then
    say "kcat not found: apt-get install -y kcat"
    apt-get install -y kcat >/dev/null 2>&1 || { apt-get update >/dev/null 2>&1 && apt-get install -y kcat >/dev/null 2>&1; } || true
  fi
  command -v kcat >/dev/null
}

machine() {
  local cpu
  cpu=$(awk -F': ' '/model name/ { print $2; exit }' /proc/cpuinfo)
  echo "${cpu:-unknown CPU}, $(nproc) cores, Linux $(uname -r), load average $(cut -d' ' -f1-3 /proc/loadavg)"
}

# Machine facts as a JSON object.
machine_json() {
  jq -n --arg cpu "$(awk -F': ' '/model name/ { print $2; exit }' /proc/cpuinfo)" \
    --argjson cores "$(nproc)" --arg kernel "$(uname -r)" --arg load "$(cut -d' ' -f1-3 /proc/loadavg)" \
    '{cpu: $cpu, cores: $cores, kernel: $kernel, load_average_at_start: $load}'
}

bench_exe() {
  local log=$out/build-$1.log
  mkdir -p "$out"
  cargo bench --bench "$1" --no-run --message-format=json-render-diagnostics 2>"$log" |
    jq -r 'select(.reason == "compiler-artifact" and .executable != null and .target.name == "'"$1"'") | .executable' | tail -n 1 |
    grep . || { tail -n 20 "$log" >&2; die "building benches/$1.rs failed (log: $log)"; }
}

git_commit() {
  local c
  c=$(git rev-parse HEAD 2>/dev/null || echo unknown)
  git diff --quiet HEAD 2>/dev/null || c+="-dirty"
  echo "$c"
}

# bench_input LINES: prints the path of the input file, writing it first unless
# a file of exactly the right size is there. Bytes of `key-<i mod 1000>|<value>\n`:
bench_input() {
  local n=$1 value_size=100 keys=1000 file size
  file=$out/produce-$n.txt
  digits_below() { local r=$1; echo $(( (r < 10 ? r : 10) + 2 * (r > 100 ? 90 : (r > 10 ? r - 10 : 0)) + 3 * (r > 100 ? r - 100 : 0) )); }
  size=$(( n * (4 + 1 + value_size + 1) + (n / keys) * $(digits_below $keys) + $(digits_below $((n % keys))) ))
  mkdir -p "$out"
  if [ "$(stat -c %s "$file" 2>/dev/null || echo 0)" != "$size" ]; then
    say "writing $n lines ($size bytes) to $file"
    awk -v n="$n" -v k="$keys" -v v="$value_size" 'BEGIN {   # value: 10-digit sequence number + filler
      while (length(fill) < v - 10) fill = fill "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
      fill = substr(fill, 1, v - 10)
      for (i = 0; i < n; i++) printf "key-%d|%010d%s\n", i % k, i, fill
    }' >"$file.new"
    [ "$(stat -c %s "$file.new")" = "$size" ] || die "generated input has the wrong size"
    mv "$file.new" "$file"
  fi
  echo "$file"
}

# timed OUT CMD...: /usr/bin/time's "wall user sys maxrss_kib" of CMD into OUT;
# returns CMD's exit status. stdout/stderr of CMD are the caller's to redirect.
timed() {
  local tfile=$1; shift
  /usr/bin/time -f '%e %U %S %M' -o "$tfile" "$@"
}

# The last line /usr/bin/time wrote (it prepends "Command exited with ..." on failure).
time_of() { tail -n 1 "$1" 2>/dev/null || echo "0 0 0 0"; }

# summarise TSV NAME COL: "median min max n" over ok rows of NAME ("- - - 0" if none).
summarise() {
  awk -F'\t' -v t="$2" -v c="$3" '$1 == t && $6 == "ok" && $c != "" { s[++n] = $c + 0 }
    END { if (n == 0) { print "- - - 0"; exit }
      for (i = 2; i <= n; i++) { x = s[i]; for (j = i - 1; j > 0 && s[j] > x; j--) s[j + 1] = s[j]; s[j + 1] = x }
      m = n % 2 ? s[(n + 1) / 2] : (s[n / 2] + s[n / 2 + 1]) / 2
      printf "%s %s %s %d\n", m, s[1], s[n], n }' "$1"
}

# failures TSV NAME: how many rows of NAME did not end ok.
failures() { awk -F'\t' -v t="$2" '$1 == t && $6 != "ok" { f++ } END { print f + 0 }' "$1"; }

# ratio A B: A / B to two places, or - when either is missing.
ratio() { if [ "$1" = - ] || [ "$2" = - ]; then echo -; else awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2f", (b == 0 ? 0 : a / b) }'; fi; }

# rows_json TSV NAME: the runs of NAME as a JSON array (columns named by the header
# line of TSV, numbers where they parse).
rows_json() {
  awk -F'\t' -v t="$2" 'NR == 1 || $1 == t' "$1" | jq -R -s '
    split("\n") | map(select(. != "") | split("\t")) | .[0] as $h | .[1:]
    | map([$h, .] | transpose | map({(.[0]): (.[1] | (tonumber? // .))}) | add)'
}
