#!/usr/bin/env bash
# Data-parallel stage 2 of several versions of paperlib on one prepared folder (bench/README.md section 7,
# round 8): each VARIANT is NAME:DIR, DIR holding a `paperlib/` package (e.g. `git archive REV paperlib`
# unpacked); the runs are interleaved in the order given by RUNS (variant names; "one:NAME" runs NAME in
# one process), 3 epochs x 60 steps of 128 x 128 tokens on the teacher prepared by
# `bench_sweep_gpus.py --prepare-only --out $W`.  Usage:
#   W=/tmp/sweep-bench VARIANTS="old:/tmp/v/old new:/tmp/v/new" RUNS="one:new new old new old" bash bench/ddp_variants_ab.sh
export HF_HUB_OFFLINE=1 PYTHONUNBUFFERED=1
W=${W:-/tmp/sweep-bench}
OUT=${OUT:-/tmp}
M=$W/models
common="loraild --task sst2 --method loraild_fixed --seed 0 --glue-dir $W/glue --teacher $M/teacher --student $M/student
 --epochs 3 --ild-start 0 --teacher-epochs 1 --rank 32 --max-length 128 --pad-to-max-length --no-group-by-length
 --no-progress --batch-size 128 --max-train 7680 --max-test 872 --cluster-max-examples 872 --teacher-cache-max-gb 16"
launch2="python -m accelerate.commands.launch --multi_gpu --num_processes 2 --num_machines 1 --mixed_precision no --dynamo_backend no"
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
  python - "$R" "$label" <<'PY'
import glob, json, sys
r = json.load(open(glob.glob(sys.argv[1] + "/**/seed0-*.json", recursive=True)[0]))
per = [round(1e3 * h["steps_s"] / h["steps"], 2) for h in r["history"]]
print(f"{sys.argv[2]:10s} stage 2 {r['elapsed_s']:6.2f} s; ms/step by epoch {per}; losses {[round(h['train']['loss'], 6) for h in r['history']]}; "
      f"phases {({k: round(v, 2) for k, v in r['phases_s'].items()})}", flush=True)
if r["phases_s"].get("teacher", 0) > 5:
    print("  (the prepared teacher was not found: trained again)")
PY
done
