#!/usr/bin/env bash
# Data-parallel stage 2 of several versions of paperlib on one prepared folder (bench/README.md section 7,
# round 8): each VARIANT is NAME:DIR, DIR holding a `paperlib/` package (e.g. `git archive REV paperlib`
# unpacked); the runs are interleaved in the order given by RUNS (variant names; "one:NAME" runs NAME in
# one process), 3 epochs x 60 steps of 128 x 128 tokens on the teacher prepared by
# `bench_sweep_gpus.py --prepare-only --out $W`.  Usage:
#   W=/tmp/sweep-bench VARIANTS="old:/tmp/v/old new:/tmp/v/new" RUNS="one:new new old new old" bash bench/ddp_variants_ab.sh
export HF_HUB_OFFLINE=1 PYTHONUNBUFFERED=1
source "$(dirname "$0")/ab_common.sh"  # W, OUT, M, common, launch2
declare -A dir
for v in $VARIANTS; do dir[${v%%:*}]=${v#*:}; done
i=0
for run in $RUNS; do
  i=$((i + 1))
  name=${run#one:}
  [ -n "${dir[$name]:-}" ] || { echo "no variant named $name in VARIANTS"; exit 2; }
  if [ "$run" != "$name" ]; then cmd="env CUDA_VISIBLE_DEVICES=0 python bench/profile_cli_steps.py"; label="1x$name"
  else cmd="$launch2 bench/profile_cli_steps.py"; label="2x$name"; fi
  R=$W/ab-$i-$label; rm -rf "$R"; cp -al "$W/results-teachers" "$R"
  PYTHONPATH="${dir[$name]}:$PWD/bench${PYTHONPATH:+:$PYTHONPATH}" $cmd --profile-out /tmp/x --profile-steps 0 $common \
    --results-dir "$R" > "$OUT/ab-$i-$label.log" 2>&1 || { echo "$label failed"; tail -5 "$OUT/ab-$i-$label.log"; continue; }
  python bench/ab_summary.py "$R" "$label"
done
