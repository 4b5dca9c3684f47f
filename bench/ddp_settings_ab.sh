#!/usr/bin/env bash
# DDP's static_graph on and off (bench/README.md section 7, round 7): one process, then 2 processes
# with static_graph off and on, twice, 3 epochs each, on a folder prepared by bench_sweep_gpus.py
# (--prepare-only --out $W): `W=/tmp/sweep-bench bash bench/ddp_settings_ab.sh`
export PYTHONPATH=${PYTHONPATH:+$PYTHONPATH:}. HF_HUB_OFFLINE=1 PYTHONUNBUFFERED=1
W=${W:-/tmp/sweep-bench}
OUT=${OUT:-/tmp}
M=$W/models
common="loraild --task sst2 --method loraild_fixed --seed 0 --glue-dir $W/glue --teacher $M/teacher --student $M/student
 --epochs 3 --ild-start 0 --teacher-epochs 1 --rank 32 --max-length 128 --pad-to-max-length --no-group-by-length
 --no-progress --batch-size 128 --max-train 7680 --max-test 872 --cluster-max-examples 872 --teacher-cache-max-gb 16"
launch2="python -m accelerate.commands.launch --multi_gpu --num_processes 2 --num_machines 1 --mixed_precision no --dynamo_backend no"
for v in one off on off2 on2; do
  case $v in
    one) cmd="env CUDA_VISIBLE_DEVICES=0 python bench/profile_cli_steps.py --profile-out /tmp/x --profile-steps 0";;
    off|off2) cmd="$launch2 bench/profile_cli_steps.py --profile-out /tmp/x --profile-steps 0 --ddp-static-graph off";;
    on|on2) cmd="$launch2 bench/profile_cli_steps.py --profile-out /tmp/x --profile-steps 0 --ddp-static-graph on";;
  esac
  R=$W/ab-$v; rm -rf "$R"; cp -al "$W/results-teachers" "$R"
  $cmd $common --results-dir "$R" > "$OUT/ab-$v.log" 2>&1 || { echo "$v failed"; tail -5 "$OUT/ab-$v.log"; exit 1; }
  python - "$R" "$v" <<'PY'
import glob, json, sys
r = json.load(open(glob.glob(sys.argv[1] + "/**/seed0-*.json", recursive=True)[0]))
per = [round(1e3 * h["steps_s"] / h["steps"], 2) for h in r["history"]]
print(f"{sys.argv[2]:5s} stage 2 {r['elapsed_s']:6.2f} s; ms/step by epoch {per}; losses {[round(h['train']['loss'], 6) for h in r['history']]}; "
      f"phases {({k: round(v, 2) for k, v in r['phases_s'].items()})}", flush=True)
if r["phases_s"].get("teacher", 0) > 5:
    sys.exit("the prepared teacher was not found (trained again): stop")
PY
  [ $? -eq 0 ] || exit 1
done
