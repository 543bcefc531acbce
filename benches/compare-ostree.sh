#!/usr/bin/env bash
# Ingest speed against `ostree commit` (bare repo) on the same 25k-entry fixture, measured side
# by side in one run, plus re-ingest and peak memory of a 100k-entry ingest.
#
#   bash benches/compare-ostree.sh [RUNS]     (default 5; needs the Debian package ostree)
#
# Prints a markdown table (the one in docs/benchmarks.md). Each run starts from a fresh store /
# fresh repo with the page cache warm (the fixture was just generated), alternating the tools so
# that machine noise hits both alike. Medians are reported.
set -euo pipefail
runs=${1:-5}
cd "$(dirname "$0")/.."
cargo build --release --quiet
bin=$PWD/target/release/execroot
work=$(mktemp -d /var/tmp/execroot-bench.XXXXXX)
trap 'rm -rf "$work"' EXIT
ms() { echo $(( ($(date +%s%N) - $1) / 1000000 )); }
median() { sort -n | awk '{a[NR]=$1} END {print (NR%2) ? a[(NR+1)/2] : int((a[NR/2]+a[NR/2+1])/2)}'; }

"$bin" fixture generate node-modules "$work/tree" --seed 1 >/dev/null
have_ostree=0; command -v ostree >/dev/null && have_ostree=1
: >"$work/ex" ; : >"$work/re" ; : >"$work/os"
for i in $(seq "$runs"); do
  rm -rf "$work/store" "$work/repo"
  sync; t=$(date +%s%N); "$bin" --store "$work/store" snapshot create "$work/tree" --json >/dev/null; ms "$t" >>"$work/ex"
  t=$(date +%s%N); "$bin" --store "$work/store" snapshot create "$work/tree" --json >/dev/null; ms "$t" >>"$work/re"
  if [ $have_ostree = 1 ]; then
    ostree --repo="$work/repo" init --mode=bare
    sync; t=$(date +%s%N); ostree --repo="$work/repo" commit --branch=b --tree=dir="$work/tree" >/dev/null; ms "$t" >>"$work/os"
  fi
done
ex=$(median <"$work/ex"); re=$(median <"$work/re")
echo "| measurement (25k entries, $(du -sh --apparent-size "$work/tree" | cut -f1)) | median of $runs |"
echo "|---|---|"
echo "| execroot snapshot create (fresh store) | ${ex} ms |"
echo "| execroot snapshot create (unchanged tree again) | ${re} ms ($(( 100 * re / ex ))% of first) |"
if [ $have_ostree = 1 ]; then
  os=$(median <"$work/os")
  echo "| ostree commit (fresh bare repo) | ${os} ms |"
  echo "| execroot / ostree | $(awk -v a="$ex" -v b="$os" 'BEGIN{printf "%.2f", a/b}') |"
else
  echo "| ostree commit | not measured: ostree is not installed |"
fi

rm -rf "$work/tree" "$work/store"
"$bin" fixture generate node-modules "$work/big" --seed 2 --scale 4 >/dev/null
entries=$(find "$work/big" | wc -l)
/usr/bin/time -v "$bin" --store "$work/store" snapshot create "$work/big" --json >/dev/null 2>"$work/time"
rss=$(awk -F': ' '/Maximum resident set size/ {print $2}' "$work/time")
echo "| peak RSS ingesting $entries entries | $(( rss / 1024 )) MB |"
