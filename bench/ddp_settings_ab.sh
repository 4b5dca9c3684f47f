#!/usr/bin/env bash
# DDP's static_graph on and off (bench/README.md section 7, round 7): one process, then 2 processes
# with static_graph off and on, twice, 3 epochs each, on a folder prepared by bench_sweep_gpus.py
# (--prepare-only --out $W): `W=/tmp/sweep-bench bash bench/ddp_settings_ab.sh`
export PYTHONPATH=${PYTHONPATH:+$PYTHONPATH:}. HF_HUB_OFFLINE=1 PYTHONUNBUFFERED=1
source "$(dirname "$0")/ab_common.sh"  # W, OUT, M, common, launch2
for v in one off on off2 on2; do
  case $v in
    one) cmd="env CUDA_VISIBLE_DEVICES=0 python bench/profile_cli_steps.py --profile-out /tmp/x --profile-steps 0";;
    off|off2) cmd="$launch2 bench/profile_cli_steps.py --profile-out /tmp/x --profile-steps 0 --ddp-static-graph off";;
    on|on2) cmd="$launch2 bench/profile_cli_steps.py --profile-out /tmp/x --profile-steps 0 --ddp-static-graph on";;
  esac
  R=$W/ab-$v; rm -rf "$R"; cp -al "$W/results-teachers" "$R"
  $cmd $common --results-dir "$R" > "$OUT/ab-$v.log" 2>&1 || { echo "$v failed"; tail -5 "$OUT/ab-$v.log"; exit 1; }
  python bench/ab_summary.py "$R" "$v" || exit 1
done
