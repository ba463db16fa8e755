#!/bin/sh
# Merges seeds/T and work/T into a minimal corpus/T (inputs that add coverage only).
set -e
cd "$(dirname "$0")"
for t in ${TARGETS:-checkpoint pickle image input}; do
  mkdir -p corpus/$t.new
  nice -n 15 cargo +nightly fuzz cmin $t corpus/$t.new -- seeds/$t work/$t corpus/$t >/dev/null 2>&1 || \
  nice -n 15 cargo +nightly fuzz run $t corpus/$t.new seeds/$t work/$t corpus/$t -- -merge=1 -rss_limit_mb=2048 -max_len=1048576
  rm -rf corpus/$t && mv corpus/$t.new corpus/$t
done
