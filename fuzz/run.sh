#!/bin/sh
# Runs each fuzz target for $1 seconds (default 720), one after the other, nice'd, from the
# seeds in seeds/T plus the committed corpus/T; new inputs go to work/T (not committed).
# Inputs may be up to 1 MiB: a hostile checkpoint needs a large file (deep nesting).
# Then: ./minimize.sh folds work/T into a minimal corpus/T.
set -e
cd "$(dirname "$0")"
secs=${1:-720}
for t in ${TARGETS:-checkpoint pickle image input}; do
  mkdir -p work/$t corpus/$t seeds/$t logs
  nice -n 15 cargo +nightly fuzz run $t work/$t corpus/$t seeds/$t -- \
    -max_total_time=$secs -rss_limit_mb=2048 -max_len=1048576 -timeout=30 \
    > logs/$t.log 2>&1 || echo "$t: fuzzer stopped with a finding, see logs/$t.log and artifacts/$t"
done
