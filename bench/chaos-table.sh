#!/usr/bin/env bash
# Prints the rows the fault loops wrote (tests/chaos/table.rs) as one
# Markdown table: `bench/chaos-table.sh [target/chaos/rows.tsv]`.
set -euo pipefail
rows=${1:-target/chaos/rows.tsv}
if [ ! -s "$rows" ]; then
  echo "chaos-table: no rows in $rows (did the loops run?)" >&2
  exit 1
fi
echo "| loop | scale | iterations | messages | handled | lost | order violations | duplicates | wall | target | notes |"
echo "|---|---|---:|---:|---:|---:|---:|---:|---:|---|---|"
awk -F '\t' '{ printf "|"; for (i = 1; i <= NF; i++) printf " %s |", $i; printf "\n" }' "$rows"
