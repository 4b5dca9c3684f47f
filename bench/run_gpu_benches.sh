#!/usr/bin/env bash
# The GPU benchmarks of bench/README.md sections 5-7 (issues 13 and 15), as run on the two-GPU
# machine: `bash bench/run_gpu_benches.sh single` runs the one-card benchmarks, two at a time (one
# per card, CUDA_VISIBLE_DEVICES), `... multi` the ones that need both cards, one after another.
# Every figure lands in $OUT (default bench/out) as JSON plus one log per card; each command has a
# time limit so that a slow one cannot take the others' results with it.
set -u
DEST=${OUT:-bench/out}
OUT=$DEST/raw  # everything goes here, then into one archive (the device tool returns at most 8 files)
mkdir -p "$OUT"
export PYTHONPATH=${PYTHONPATH:+$PYTHONPATH:}. PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1
LIMIT=${LIMIT:-560}
t0=$(date +%s)
left() { echo $((LIMIT - ($(date +%s) - t0))); }
step() {  # step LOG CMD...: run CMD within the time still left, log its output, note its exit code
  local log=$1; shift
  echo "### $(date -u +%H:%M:%S) $*" >>"$log"
  if [ "$(left)" -le 5 ]; then echo "### skipped: no time left" >>"$log"; return; fi
  timeout "$(left)" "$@" >>"$log" 2>&1
  echo "### exit $? after $(($(date +%s) - t0)) s" >>"$log"
}

nvidia-smi --query-gpu=index,name,memory.total --format=csv >"$OUT/cards.txt" 2>&1
python -c "import torch, transformers, peft, sklearn; print(torch.__version__, torch.version.cuda, transformers.__version__, peft.__version__, sklearn.__version__)" >>"$OUT/cards.txt" 2>&1

case ${1:-single} in
single)
  (
    export CUDA_VISIBLE_DEVICES=0
    step "$OUT/card0.log" python bench/bench_swap.py --dtypes bf16 --tokens 16384 65536 --naive-tokens 65536 \
      --precisions float64 bf16x3 bf16x6 tf32 --json "$OUT/swap_precision.json" --profile "$OUT/profile_swap_bf16.txt"
    step "$OUT/card0.log" python bench/bench_swap.py --arch llama3-8b --dtypes bf16 --tokens 16384 65536 \
      --naive-tokens 16384 --precisions float64 bf16x6 --json "$OUT/swap_llama8b.json"
    step "$OUT/card0.log" python bench/bench_loraild.py --section kmeans --kmeans-examples 3200 --kmeans-sets 6 \
      --json "$OUT/kmeans.json"
  ) &
  (
    export CUDA_VISIBLE_DEVICES=1
    step "$OUT/card1.log" python bench/bench_loraild.py --dtypes bf16 --lora-paths fused hooks \
      --json "$OUT/loraild_steps.json" --profile "$OUT/profile_loraild_fused.txt"
    step "$OUT/card1.log" python bench/bench_loraild.py --section run --run-epochs 2 --run-steps 50 \
      --run-batch 128 --run-test 3200 --json "$OUT/loraild_run.json"
    step "$OUT/card1.log" python bench/bench_loraild.py --section compile --dtypes bf16 --compare-steps 200 \
      --json "$OUT/loraild_compile.json"
  ) &
  wait
  ;;
multi)
  step "$OUT/multi.log" python bench/bench_swap_multi_gpu.py --json "$OUT/swap_multi_gpu.json"
  step "$OUT/multi.log" python bench/bench_loraild_ddp.py $DDP --out /tmp/ddp-bench --json "$OUT/ddp_b128.json"
  ;;
sweep)
  step "$OUT/sweep.log" python bench/bench_sweep_gpus.py --json "$OUT/sweep.json"
  ;;
final)  # the second round (after the fixes): one-card work two at a time, then the sweep, then DDP
  DDP="--nproc 2 --global-batch 128 --steps-per-epoch 100 --epochs 3 --words 24"
  (
    export CUDA_VISIBLE_DEVICES=0
    step "$OUT/card0.log" python bench/bench_swap.py --dtypes bf16 --tokens 65536 --naive-tokens 65536 \
      --precisions float64 tf32 bf16x3 --json "$OUT/swap_precision.json" --profile "$OUT/profile_swap_bf16.txt"
    step "$OUT/card0.log" python bench/bench_loraild.py --dtypes bf16 --lora-paths fused \
      --methods wo_kd vanilla_kd loraild_fixed loraild_average loraild_random_step --json "$OUT/loraild_steps.json"
    step "$OUT/card0.log" python bench/bench_loraild_ddp.py $DDP --out /tmp/ddp-bench --prepare-only
  ) &
  (
    export CUDA_VISIBLE_DEVICES=1
    step "$OUT/card1.log" python bench/bench_loraild.py --section run --run-epochs 3 --run-steps 100 \
      --run-batch 128 --run-test 3200 --run-words 24 --run-compile off auto --json "$OUT/loraild_run.json"
  ) &
  wait
  step "$OUT/multi.log" python bench/bench_sweep_gpus.py --json "$OUT/sweep.json"
  step "$OUT/multi.log" python bench/bench_loraild_ddp.py $DDP --out /tmp/ddp-bench --json "$OUT/ddp_b128.json"
  ;;
third1)  # third round, part 1 (issue 15 speed, issue 13 step and compiled run): one card each
  DDP="--nproc 2 --global-batch 128 --steps-per-epoch 100 --epochs 3 --words 24"
  (
    export CUDA_VISIBLE_DEVICES=0
    step "$OUT/card0.log" python bench/bench_swap.py --dtypes bf16 --tokens 65536 --naive-tokens 65536 \
      --precisions float64 tf32 bf16x3 --json "$OUT/swap_gpt2.json" --profile "$OUT/profile_swap_gpt2_tf32.txt" \
      --profile-precision tf32
    step "$OUT/card0.log" python bench/bench_swap.py --arch llama3-8b --dtypes bf16 --tokens 16384 65536 \
      --naive-tokens 16384 --precisions float64 tf32 --json "$OUT/swap_llama8b.json"
  ) &
  (
    export CUDA_VISIBLE_DEVICES=1
    step "$OUT/card1.log" python bench/bench_loraild.py --section run --run-epochs 3 --run-steps 100 \
      --run-batch 128 --run-test 3200 --run-words 24 --run-compile off auto --json "$OUT/loraild_run.json"
    M="--dtypes bf16 --lora-paths fused --modes cached --methods vanilla_kd loraild_fixed loraild_average loraild_random_step"
    step "$OUT/card1.log" python bench/bench_loraild.py $M --batch 32 --repeats 3 --json "$OUT/steps_b32.json"
    step "$OUT/card1.log" python bench/bench_loraild.py $M --batch 128 --repeats 3 --steps 20 --json "$OUT/steps_b128.json"
    step "$OUT/card1.log" python bench/bench_loraild.py $M --batch 32 --compile reduce-overhead --steps 100 \
      --json "$OUT/steps_b32_compiled.json"
    step "$OUT/card1.log" python bench/bench_loraild_ddp.py $DDP --out /tmp/ddp-bench --prepare-only
  ) &
  wait
  ;;
third2)  # third round, part 2: the two-card runs (needs /tmp/ddp-bench from part 1 on the same machine)
  DDP="--nproc 2 --global-batch 128 --steps-per-epoch 100 --epochs 3 --words 24"
  step "$OUT/multi.log" python bench/bench_sweep_gpus.py --json "$OUT/sweep.json"
  step "$OUT/multi.log" python bench/bench_loraild_ddp.py $DDP --out /tmp/ddp-bench --json "$OUT/ddp_b128.json"
  ;;
fourth1)  # fourth round, part 1: swap speed after the copy fix (card 0), compiled steps (card 1), then the sweep
  DDP="--nproc 2 --global-batch 128 --steps-per-epoch 100 --epochs 3 --words 24"
  (
    export CUDA_VISIBLE_DEVICES=0
    step "$OUT/card0.log" python bench/bench_swap.py --dtypes bf16 --tokens 65536 --naive-tokens 65536 \
      --precisions float64 tf32 --json "$OUT/swap_gpt2_b8.json"
    step "$OUT/card0.log" python bench/bench_swap.py --dtypes bf16 --tokens 65536 --naive-tokens 65536 \
      --batch-size 16 --precisions float64 tf32 --json "$OUT/swap_gpt2_b16.json"
    step "$OUT/card0.log" python bench/bench_swap.py --arch llama3-8b --dtypes bf16 --tokens 65536 \
      --naive-tokens 0 --precisions float64 tf32 --json "$OUT/swap_llama8b.json"
  ) &
  (
    export CUDA_VISIBLE_DEVICES=1
    step "$OUT/card1.log" python bench/bench_loraild_ddp.py $DDP --out /tmp/ddp-bench --prepare-only
    step "$OUT/card1.log" python bench/bench_loraild.py --dtypes bf16 --lora-paths fused --modes cached \
      --methods vanilla_kd loraild_fixed --batch 32 --compile reduce-overhead --steps 100 --json "$OUT/steps_b32_compiled.json"
  ) &
  wait
  step "$OUT/multi.log" python bench/bench_sweep_gpus.py --json "$OUT/sweep.json"
  ;;
fourth2)  # fourth round, part 2: data-parallel (needs /tmp/ddp-bench from part 1 on the same machine)
  DDP="--nproc 2 --global-batch 128 --steps-per-epoch 100 --epochs 3 --words 24"
  step "$OUT/multi.log" python bench/bench_loraild_ddp.py $DDP --out /tmp/ddp-bench --json "$OUT/ddp_b128.json"
  ;;
fifth1)  # fifth round, part 1: one CLI run eager and compiled (card 0); DDP preparation and step profiles (card 1)
  DDP="--nproc 2 --global-batch 128 --steps-per-epoch 100 --epochs 3 --words 24"
  (
    export CUDA_VISIBLE_DEVICES=0
    step "$OUT/card0.log" python bench/bench_loraild.py --section run --run-epochs 3 --run-steps 100 \
      --run-batch 128 --run-test 3200 --run-words 24 --run-compile off auto --json "$OUT/loraild_run.json"
  ) &
  (
    export CUDA_VISIBLE_DEVICES=1
    step "$OUT/card1.log" python bench/bench_loraild_ddp.py $DDP --out /tmp/ddp-bench --prepare-only
    step "$OUT/card1.log" python bench/bench_loraild.py --dtypes bf16 --lora-paths fused --modes cached \
      --methods vanilla_kd loraild_fixed --batch 128 --steps 20 --json "$OUT/steps_b128.json" \
      --profile "$OUT/profile_b128.txt" --profile-method vanilla_kd loraild_fixed
  ) &
  wait
  ;;
fifth2)  # fifth round, part 2: the sweep (round 4's settings), then data-parallel (needs /tmp/ddp-bench from part 1)
  DDP="--nproc 2 --global-batch 128 --steps-per-epoch 100 --epochs 3 --words 24"
  step "$OUT/multi.log" python bench/bench_sweep_gpus.py --json "$OUT/sweep.json"
  step "$OUT/multi.log" python bench/bench_loraild_ddp.py $DDP --out /tmp/ddp-bench --json "$OUT/ddp_b128.json"
  ;;
sixth1)  # sixth round, part 1: data-parallel after DDP's unused-parameter search was limited to RAIL-KD
  DDP="--nproc 2 --global-batch 128 --steps-per-epoch 100 --epochs 3 --words 24"
  step "$OUT/multi.log" python bench/bench_loraild_ddp.py $DDP --out /tmp/ddp-bench --prepare-only
  step "$OUT/multi.log" python bench/bench_loraild_ddp.py $DDP --out /tmp/ddp-bench --json "$OUT/ddp_b128.json"
  ;;
sixth2)  # sixth round, part 2: a sweep of 8 runs of about 20 s, lanes started ahead
  step "$OUT/multi.log" python bench/bench_sweep_gpus.py --methods vanilla_kd loraild_fixed loraild_average \
    loraild_random_step --seeds 2 --epochs 2 --steps-per-epoch 80 --json "$OUT/sweep_8runs.json"
  ;;
seventh1)  # seventh round, part 1: data-parallel with pinned batches, DDP's bucket views, the cache read in shares;
  # the lone half-batch step and profiles of both step kinds in the same call
  DDP="--nproc 2 --global-batch 128 --steps-per-epoch 100 --epochs 3 --words 24"
  step "$OUT/multi.log" python bench/bench_loraild_ddp.py $DDP --out /tmp/ddp-bench --prepare-only
  step "$OUT/multi.log" python bench/bench_loraild_ddp.py $DDP --out /tmp/ddp-bench --half-batch --profile-steps 20 \
    --json "$OUT/ddp_b128.json"
  cp /tmp/ddp-bench/profiles/*.txt "$OUT/" 2>/dev/null
  ;;
seventh2|seventh2prep)  # seventh round, part 2: a sweep of 16 runs of about 17 s (4 methods x 4 seeds,
  # 2 epochs x 60 steps); seventh2prep trains the teacher first (a call of its own: one call may last 600 s)
  SWEEP="--methods vanilla_kd loraild_fixed loraild_average loraild_random_step --seeds 4 --epochs 2 --steps-per-epoch 60"
  if [ "$1" = seventh2prep ]; then
    step "$OUT/multi.log" python bench/bench_sweep_gpus.py $SWEEP --out /tmp/sweep-bench --prepare-only
  else
    step "$OUT/multi.log" python bench/bench_sweep_gpus.py $SWEEP --out /tmp/sweep-bench --json "$OUT/sweep_16runs.json"
  fi
  ;;
eighth1|eighth1prep)  # where a data-parallel step's extra 5 ms go (device-idle gaps in each process's timeline).
  # Round 8 ran both parts in one call and reached the 580 s limit before trace_gaps.py: prepare in a call
  # of its own (eighth1prep), then run eighth1 right after it, while the machine is still warm
  DDP="--nproc 2 --global-batch 128 --steps-per-epoch 100 --epochs 3 --words 24"
  if [ "$1" = eighth1prep ] || [ ! -d /tmp/ddp-bench/results-teachers ]; then
    step "$OUT/multi.log" python bench/bench_loraild_ddp.py $DDP --out /tmp/ddp-bench --prepare-only
  fi
  [ "$1" = eighth1prep ] || step "$OUT/multi.log" python bench/bench_loraild_ddp.py $DDP --out /tmp/ddp-bench --half-batch \
    --profile-steps 5 --trace --json "$OUT/ddp_b128.json"
  if [ "$1" = eighth1 ]; then
    step "$OUT/multi.log" python bench/checks/trace_gaps.py /tmp/ddp-bench/profiles/trace_*.json --steps 5 --top 15
    cp /tmp/ddp-bench/profiles/*.txt "$OUT/" 2>/dev/null
  fi
  ;;
ninth1)  # round 8: the Triton LoRA-A op on card 1 (tests, then timings) while card 0 prepares a teacher; then
  # data-parallel stage 2 of paperlib versions unpacked in /tmp/v/* (bench/ddp_variants_ab.sh), interleaved
  (
    export CUDA_VISIBLE_DEVICES=1
    step "$OUT/card1.log" timeout 150 python -m pytest -q -x -p no:cacheprovider tests/loraild/test_loraild_lora_a_kernel.py \
      tests/loraild/test_loraild_fused_lora.py
    step "$OUT/card1.log" timeout 90 python bench/checks/lora_a_kernel.py --json "$OUT/lora_a_kernel.json"
  ) &
  SWEEP="--methods vanilla_kd loraild_fixed --seeds 1 --epochs 3 --steps-per-epoch 60"
  step "$OUT/multi.log" python bench/bench_sweep_gpus.py $SWEEP --out /tmp/sweep-bench --prepare-only
  wait
  step "$OUT/multi.log" env W=/tmp/sweep-bench OUT="$OUT" VARIANTS="$VARIANTS" RUNS="$RUNS" bash bench/ddp_variants_ab.sh
  ;;
tenth1|tenth1prep)  # round 9 (paths named as now: round 9 ran "fused", then the Triton op). tenth1prep: card 1 times the step with the one-node LoRA branch against the
  # composite path and the torch features (tests, step table, profiles, the Triton op's tile sweep) while card 0
  # prepares a data-parallel run three times round 8's length (3 epochs x 300 steps); tenth1, right after on
  # the warm machine: that run in 1 and 2 processes
  DDP="--nproc 2 --global-batch 128 --steps-per-epoch 300 --epochs 3 --words 24"
  if [ "$1" = tenth1prep ]; then
    (
      export CUDA_VISIBLE_DEVICES=1
      step "$OUT/card1.log" timeout 150 python -m pytest -q -x -p no:cacheprovider tests/loraild/test_loraild_lora_branch.py
      step "$OUT/card1.log" timeout 200 python bench/bench_loraild.py --dtypes bf16 --modes cached \
        --methods vanilla_kd loraild_fixed --batch 128 --lora-paths fused-triton fused-composite fused-torch --repeats 3 \
        --json "$OUT/steps_b128.json"
      step "$OUT/card1.log" timeout 120 python bench/bench_loraild.py --dtypes bf16 --modes cached \
        --methods vanilla_kd loraild_fixed --batch 128 --steps 20 --profile "$OUT/profile_b128.txt" \
        --profile-method vanilla_kd loraild_fixed --profile-lora-path fused-triton --json "$OUT/steps_b128_profiled.json"
      step "$OUT/card1.log" timeout 200 python bench/checks/lora_a_kernel.py --sweep --json "$OUT/lora_a_kernel_sweep.json"
    ) &
    step "$OUT/multi.log" python bench/bench_loraild_ddp.py $DDP --out /tmp/ddp-long --prepare-only
    wait
  else
    step "$OUT/multi.log" python bench/bench_loraild_ddp.py $DDP --out /tmp/ddp-long --json "$OUT/ddp_b128_long.json"
  fi
  ;;
tenth2)  # round 9, one card and nothing else running: the step table of tenth1prep again (5 interleaved repeats
  # of 60 steps), profiles of the torch-feature and one-node paths, then the Triton op's tile sweep
  B="--dtypes bf16 --modes cached --batch 128"
  step "$OUT/card0.log" timeout 270 python bench/bench_loraild.py $B --methods vanilla_kd loraild_fixed --steps 60 \
    --lora-paths fused-triton fused-composite fused-torch --repeats 5 --json "$OUT/steps_b128_quiet.json"
  step "$OUT/card0.log" timeout 60 python bench/bench_loraild.py $B --methods vanilla_kd loraild_fixed --steps 20 \
    --profile "$OUT/profile_b128_torch.txt" --profile-method vanilla_kd loraild_fixed --profile-lora-path fused-torch
  step "$OUT/card0.log" timeout 45 python bench/bench_loraild.py $B --methods loraild_fixed --steps 20 \
    --profile "$OUT/profile_b128_one_node.txt" --profile-method loraild_fixed --profile-lora-path fused-triton
  step "$OUT/card0.log" timeout 90 python bench/checks/lora_a_kernel.py --sweep --json "$OUT/lora_a_kernel_sweep.json"
  ;;
eleventh1|eleventh1prep)  # round 9, after the cache-size fix: tenth1's data-parallel run (3 x 300 steps) again, now
  # with the teacher's outputs cached (about 9 GB of real tokens; tenth1's run estimated 45 GB and ran the teacher
  # live); eleventh1prep prepares it in a call of its own, eleventh1 times it right after
  DDP="--nproc 2 --global-batch 128 --steps-per-epoch 300 --epochs 3 --words 24"
  if [ "$1" = eleventh1prep ]; then
    step "$OUT/multi.log" python bench/bench_loraild_ddp.py $DDP --out /tmp/ddp-long --prepare-only
    du -sh /tmp/ddp-long/results-teachers >>"$OUT/multi.log" 2>&1
  else
    step "$OUT/multi.log" python bench/bench_loraild_ddp.py $DDP --out /tmp/ddp-long --json "$OUT/ddp_b128_long_cached.json"
    grep -h "alongside\|teacher outputs" /tmp/ddp-long/log-*.txt >>"$OUT/multi.log" 2>&1
  fi
  ;;
twelfth1|twelfth1prep)  # round 11: twelfth1prep prepares eleventh1's data-parallel run (3 x 300 steps, cached teacher) on
  # card 0 while card 1 times compiling in bf16 (item 5b): one CLI run eager and compiled (3 x 100 steps of
  # 128 x 128), the compiled-vs-eager loss curves at 128 x 128, and compiled step times of both methods;
  # twelfth1, right after on the warm machine: the data-parallel run in 1 and 2 processes, nothing else running
  DDP="--nproc 2 --global-batch 128 --steps-per-epoch 300 --epochs 3 --words 24"
  if [ "$1" = twelfth1prep ]; then
    (
      export CUDA_VISIBLE_DEVICES=1
      B="--dtypes bf16 --modes cached --batch 128"
      step "$OUT/card1.log" timeout 230 python bench/bench_loraild.py --section run --run-precision bf16 --run-epochs 3 \
        --run-steps 100 --run-words 24 --run-compile off reduce-overhead --json "$OUT/run_bf16_compile.json"
      step "$OUT/card1.log" timeout 130 python bench/bench_loraild.py --section compile $B --compare-steps 300 \
        --json "$OUT/compile_b128.json"
      step "$OUT/card1.log" timeout 80 python bench/bench_loraild.py $B --methods vanilla_kd loraild_fixed --steps 60 \
        --compile reduce-overhead --json "$OUT/steps_b128_compiled.json"
    ) &
    step "$OUT/multi.log" python bench/bench_loraild_ddp.py $DDP --out /tmp/ddp-long --prepare-only
    du -sh /tmp/ddp-long/results-teachers >>"$OUT/multi.log" 2>&1
    wait
  else
    step "$OUT/multi.log" python bench/bench_loraild_ddp.py $DDP --out /tmp/ddp-long --json "$OUT/ddp_b128_long_cached.json"
    grep -h "alongside\|teacher outputs" /tmp/ddp-long/log-*.txt >>"$OUT/multi.log" 2>&1
  fi
  ;;
thirteenth1)  # round 11, last call: the default compile="auto" end to end (card 0: one bf16 CLI run of 20 epochs x
  # 100 steps, 2,000 steps, eager and with the default, which compiles it); card 1: compiled-vs-eager loss curves
  # at 128 x 128 with their noise yardstick (other dropout draws), then profiles of the torch-feature step (item 5a)
  (
    export CUDA_VISIBLE_DEVICES=1
    B="--dtypes bf16 --modes cached --batch 128"
    step "$OUT/card1.log" timeout 250 python bench/bench_loraild.py --section compile $B --compare-steps 300 \
      --json "$OUT/compile_b128.json"
    step "$OUT/card1.log" timeout 120 python bench/bench_loraild.py $B --methods vanilla_kd loraild_fixed --steps 20 \
      --profile "$OUT/profile_b128_torch.txt" --profile-method vanilla_kd loraild_fixed --profile-lora-path fused-torch \
      --json "$OUT/steps_b128_profiled_torch.json"
  ) &
  step "$OUT/card0.log" python bench/bench_loraild.py --section run --run-precision bf16 --run-epochs 20 --run-steps 100 \
    --run-words 24 --run-compile off auto --json "$OUT/run_bf16_auto_2000.json"
  wait
  ;;
fourteenth1)  # round 11, one H100 and nothing else running: compiled runs one after another in one process (a sweep
  # lane), with and without the release after each run; then the step table eager and compiled (bf16, 128 x 128)
  step "$OUT/card0.log" timeout 200 python bench/checks/compiled_runs_in_one_process.py --out /tmp/lane --runs 3 \
    --json "$OUT/lane_release.json"
  step "$OUT/card0.log" timeout 120 python bench/checks/compiled_runs_in_one_process.py --out /tmp/lane --runs 3 \
    --keep-compiled --json "$OUT/lane_keep.json"
  B="--dtypes bf16 --modes cached --batch 128 --methods vanilla_kd loraild_fixed --steps 60"
  step "$OUT/card0.log" timeout 100 python bench/bench_loraild.py $B --repeats 3 --json "$OUT/steps_b128_eager.json"
  step "$OUT/card0.log" timeout 100 python bench/bench_loraild.py $B --compile reduce-overhead --json "$OUT/steps_b128_compiled.json"
  ;;
fifteenth1)  # round 11: compiled runs whose epochs end with a shorter batch (run eager since 2026-11-26), one H100
  step "$OUT/card0.log" timeout 200 python bench/checks/compiled_runs_in_one_process.py --out /tmp/lane-ragged --runs 2 \
    --epochs 3 --extra-examples 37 --json "$OUT/lane_ragged.json"
  step "$OUT/card0.log" timeout 100 python bench/checks/compiled_runs_in_one_process.py --out /tmp/lane-ragged --runs 1 \
    --epochs 3 --extra-examples 37 --compile off --json "$OUT/lane_ragged_eager.json"
  ;;
sixteenth1)  # round 11: compiling where batches are padded to their longest sentence (5-60 words, skewed short, as
  # SST-2's), now padded further to multiples of 16 when compiled; 2,000 bf16 steps eager and compiled, one H100
  step "$OUT/card0.log" timeout 560 python bench/bench_loraild.py --section run --run-precision bf16 --run-epochs 20 \
    --run-steps 100 --run-words 60 --run-min-words 5 --run-pad longest --run-compile off reduce-overhead \
    --json "$OUT/run_bf16_longest_2000.json"
  ;;
seventeenth1)  # round 12: one q/k/v product per layer (qkv_product), the step at 128 x 128 bf16 against round 11's
  # composite path and the Triton features, Vanilla KD with HF's linears and with one product; GPU tests; profiles
  step "$OUT/card0.log" python -m pytest -q -p no:cacheprovider tests/loraild/test_loraild_qkv_product.py \
    tests/loraild/test_loraild_fused_lora.py tests/loraild/test_loraild_lora_branch.py tests/loraild/test_loraild_lora_a_kernel.py
  step "$OUT/card0.log" python bench/bench_loraild.py --dtypes bf16 --batch 128 --modes cached --steps 40 --warmup 8 \
    --repeats 3 --methods vanilla_kd loraild_fixed --lora-paths fused composite fused-triton --vanilla-qkv linear product \
    --json "$OUT/loraild_steps_b128_product.json" --profile "$OUT/profile_loraild_b128_product.txt" \
    --profile-method vanilla_kd loraild_fixed --profile-lora-path fused
  ;;
eighteenth1)  # round 12: the product with fewer operations per call, 5 interleaved repeats; the tile test fixed
  step "$OUT/card0.log" python -m pytest -q -p no:cacheprovider tests/loraild/test_loraild_qkv_product.py \
    tests/loraild/test_loraild_fused_lora.py
  step "$OUT/card0.log" python -m pytest -q -p no:cacheprovider tests/loraild/test_loraild_lora_a_kernel.py -k "tiles or recorder"
  step "$OUT/card0.log" python bench/bench_loraild.py --dtypes bf16 --batch 128 --modes cached --steps 40 --warmup 8 \
    --repeats 5 --methods vanilla_kd loraild_fixed --lora-paths fused composite fused-triton --vanilla-qkv linear product \
    --json "$OUT/loraild_steps_b128_product5.json" --profile "$OUT/profile_loraild_b128_product5.txt" \
    --profile-method vanilla_kd loraild_fixed --profile-lora-path fused
  ;;
nineteenth1)  # round 12: torch against Triton features in the product, fp32 (the authors' precision) and bf16, against
  # round 11's composite path; 5 interleaved repeats; a device profile of the Triton-feature product
  step "$OUT/card0.log" python bench/bench_loraild.py --dtypes fp32 bf16 --batch 128 --modes cached --steps 40 --warmup 8 \
    --repeats 5 --methods vanilla_kd loraild_fixed --lora-paths fused fused-triton composite \
    --json "$OUT/loraild_steps_b128_features.json" --profile "$OUT/profile_loraild_b128_fused_triton.txt" \
    --profile-method loraild_fixed --profile-lora-path fused-triton
  ;;
twentieth1)  # round 12: CLI runs end to end with the product as the default path, bf16 eager and compiled (which keeps
  # the composite path), and fp32 eager (the authors' precision); 3 x 100 steps of 128 x 128, 3,200 test examples
  step "$OUT/card0.log" python bench/bench_loraild.py --section run --run-precision bf16 --run-epochs 3 --run-steps 100 \
    --run-compile off reduce-overhead --json "$OUT/run_bf16_product.json"
  step "$OUT/card0.log" python bench/bench_loraild.py --section run --run-precision no --run-epochs 3 --run-steps 100 \
    --run-compile off --json "$OUT/run_fp32_product.json"
  ;;
twentyfirst1)  # round 12: compiled students tracing the product (compiled_product) against the composite path they
  # kept by default until this call (round 12 ran `--lora-paths fused product-compiled` and `--compile-product`, which
  # then meant the composite path and the traced product): CUDA-graph step table, then compiled-vs-eager loss curves
  # with the product traced
  step "$OUT/card0.log" python bench/bench_loraild.py --compile reduce-overhead --dtypes bf16 --batch 128 --modes cached \
    --steps 60 --warmup 30 --repeats 2 --methods vanilla_kd loraild_fixed --lora-paths composite fused \
    --json "$OUT/loraild_steps_b128_compiled_product.json"
  step "$OUT/card0.log" python bench/bench_loraild.py --section compile --dtypes bf16 --batch 128 --compare-steps 300 \
    --json "$OUT/loraild_compile_b128_product.json"
  ;;
twentysecond1)  # round 13: the leaner q/k/v product (out= writes, LoRA's scale in W', gradients returned contiguous in
  # their parameters' dtypes) and Vanilla KD's cached lookup reading only its logits: the product's tests on the GPU,
  # a bf16 step table of many short interleaved repeats (a busy host's slow spells last seconds), fp32 with profiles,
  # and the compiled (CUDA graphs) step
  step "$OUT/card0.log" python -m pytest -q -p no:cacheprovider tests/loraild/test_loraild_qkv_product.py
  step "$OUT/card0.log" python bench/bench_loraild.py --dtypes bf16 --batch 128 --modes cached --steps 20 --warmup 8 \
    --repeats 15 --methods vanilla_kd loraild_fixed --lora-paths fused \
    --json "$OUT/loraild_steps_b128_lean_product.json"
  step "$OUT/card0.log" python bench/bench_loraild.py --dtypes fp32 --batch 128 --modes cached --steps 30 --warmup 5 \
    --repeats 3 --methods vanilla_kd loraild_fixed --lora-paths fused \
    --json "$OUT/loraild_steps_fp32_b128_lean_product.json" --profile "$OUT/profile_loraild_b128_lean.txt" \
    --profile-method vanilla_kd loraild_fixed
  step "$OUT/card0.log" python bench/bench_loraild.py --compile reduce-overhead --dtypes bf16 --batch 128 --modes cached \
    --steps 40 --warmup 30 --repeats 1 --methods vanilla_kd loraild_fixed --lora-paths fused \
    --json "$OUT/loraild_steps_b128_compiled_lean_product.json"
  ;;
twentythird1)  # round 13: the C++ q/k/v product (paperlib.loraild.qkv_native, FusedLoraRecorder(native="auto")) against
  # the Python one: its tests on the GPU (bit for bit), the bf16 step table with both, fp32 with profiles, a CLI run
  step "$OUT/card0.log" python -m pytest -q -p no:cacheprovider tests/loraild/test_loraild_qkv_native.py \
    tests/loraild/test_loraild_qkv_product.py
  step "$OUT/card0.log" python bench/bench_loraild.py --dtypes bf16 --batch 128 --modes cached --steps 20 --warmup 8 \
    --repeats 15 --methods vanilla_kd loraild_fixed --lora-paths fused fused-python \
    --json "$OUT/loraild_steps_b128_cpp_product.json"
  step "$OUT/card0.log" python bench/bench_loraild.py --dtypes fp32 --batch 128 --modes cached --steps 30 --warmup 5 \
    --repeats 3 --methods vanilla_kd loraild_fixed --lora-paths fused \
    --json "$OUT/loraild_steps_fp32_b128_cpp_product.json" --profile "$OUT/profile_loraild_b128_cpp.txt" \
    --profile-method vanilla_kd loraild_fixed
  step "$OUT/card0.log" python bench/bench_loraild.py --section run --run-precision bf16 --run-epochs 3 --run-steps 100 \
    --run-compile off --json "$OUT/run_bf16_cpp_product.json"
  ;;
twentyfourth1)  # round 13: the C++ product's step again, for every LoRAILD alignment (Fixed, Average, Random step)
  step "$OUT/card0.log" python bench/bench_loraild.py --dtypes bf16 --batch 128 --modes cached --steps 20 --warmup 8 \
    --repeats 12 --methods vanilla_kd loraild_fixed loraild_average loraild_random_step --lora-paths fused \
    --json "$OUT/loraild_steps_b128_cpp_product_alignments.json"
  ;;
twentyfifth1)  # round 14: the LoRA dropout's features, forward and backward, for ways of drawing the masks
  step "$OUT/card0.log" python bench/bench_lora_dropout.py --iters 30 --parts

  ;;
twentyfifth2)  # round 14: the three masks drawn one after another (qkv_product.three_dropouts): the tests on the GPU,
  # where they check the fused student against peft with dropout, and a CLI run
  step "$OUT/card0.log" python -m pytest -q -p no:cacheprovider tests/loraild/test_loraild_fused_lora.py \
    tests/loraild/test_loraild_qkv_native.py tests/loraild/test_loraild_qkv_product.py
  step "$OUT/card0.log" python bench/bench_loraild.py --section run --run-precision bf16 --run-epochs 3 --run-steps 100 \
    --run-compile off --json "$OUT/run_bf16_three_masks.json"
  ;;
twentyfifth3)  # round 14: the step for every LoRAILD alignment with the three masks, and profiles
  step "$OUT/card0.log" python bench/bench_loraild.py --dtypes bf16 --batch 128 --modes cached --steps 20 --warmup 8 \
    --repeats 12 --methods vanilla_kd loraild_fixed loraild_average loraild_random_step --lora-paths fused \
    --json "$OUT/loraild_steps_b128_three_masks.json" --profile "$OUT/profile_loraild_b128_three_masks.txt" \
    --profile-method vanilla_kd loraild_fixed
  ;;
twentysixth1)  # round 14: the final test file on the GPU, the step again for every alignment, and fp32
  step "$OUT/card0.log" python -m pytest -q -p no:cacheprovider tests/loraild/test_loraild_fused_lora.py
  step "$OUT/card0.log" python bench/bench_loraild.py --dtypes bf16 --batch 128 --modes cached --steps 20 --warmup 8 \
    --repeats 12 --methods vanilla_kd loraild_fixed loraild_average loraild_random_step --lora-paths fused \
    --json "$OUT/loraild_steps_b128_three_masks_second.json"
  step "$OUT/card0.log" python bench/bench_loraild.py --dtypes fp32 --batch 128 --modes cached --steps 30 --warmup 5 \
    --repeats 3 --methods vanilla_kd loraild_fixed --lora-paths fused --json "$OUT/loraild_steps_fp32_b128_three_masks.json"
  ;;
twentyseventh1)  # round 14: the bf16 step table once more on another host (12 interleaved repeats)
  step "$OUT/card0.log" python bench/bench_loraild.py --dtypes bf16 --batch 128 --modes cached --steps 20 --warmup 8 \
    --repeats 12 --methods vanilla_kd loraild_fixed loraild_average loraild_random_step --lora-paths fused \
    --json "$OUT/loraild_steps_b128_three_masks_third.json"
  ;;
twentyeighth1)  # round 14: where the host time of a host-bound step goes (batch 16 x 128), per method
  step "$OUT/card0.log" python bench/checks/host_profile_steps.py --batch 16 --steps 40 --top 30 \
    --methods vanilla_kd loraild_fixed
  ;;
twentyeighth2)  # round 14: the same, paperlib's own functions by time including callees
  step "$OUT/card0.log" python bench/checks/host_profile_steps.py --batch 16 --steps 40 --top 40 \
    --methods vanilla_kd loraild_fixed --sort cumulative --only "paperlib|autograd|optim"
  ;;
twentyninth1)  # round 15: the host's own work per step (thread CPU time, by phase), host-bound and at 128 x 128
  step "$OUT/card0.log" python bench/bench_loraild.py --dtypes bf16 --batch 16 --modes cached --steps 40 --warmup 8 \
    --repeats 8 --methods vanilla_kd loraild_fixed loraild_average loraild_random_step --lora-paths fused \
    --json "$OUT/loraild_host_b16.json"
  step "$OUT/card0.log" python bench/bench_loraild.py --dtypes bf16 --batch 128 --modes cached --steps 20 --warmup 8 \
    --repeats 6 --methods vanilla_kd loraild_fixed --lora-paths fused --json "$OUT/loraild_host_b128.json"
  ;;
twentyninth2)  # round 15: the host's own work per step, by the functions that make it (batch 16 x 128)
  step "$OUT/card0.log" python bench/checks/host_parts.py --batch 16 --steps 40 --repeats 5 \
    --methods vanilla_kd loraild_fixed
  ;;
twentyninth3)  # round 15: host time of one layer's q/k/v work and of its tensor calls; the step's parts, backward too
  step "$OUT/card0.log" python bench/checks/host_ops.py
  step "$OUT/card0.log" python bench/checks/host_parts.py --batch 16 --steps 40 --repeats 5 \
    --methods vanilla_kd loraild_fixed
  ;;
thirtieth1)  # round 15: A/B of paperlib in $OLD (e.g. from `git archive REV paperlib`) against the working tree:
  # the GPU tests of the changed modules, host time of one layer's q/k/v work, the step's host parts
  OLD=${OLD:-_ab_old}
  A="env PYTHONPATH=$OLD:$PYTHONPATH TORCH_EXTENSIONS_DIR=/tmp/tex_old"
  B="env TORCH_EXTENSIONS_DIR=/tmp/tex_new"
  step "$OUT/card0.log" $B python -m pytest -q -p no:cacheprovider tests/loraild/test_loraild_qkv_native.py \
    tests/loraild/test_loraild_qkv_product.py tests/loraild/test_loraild_models.py
  step "$OUT/card0.log" $A python bench/checks/host_ops.py --calls 100 --samples 7
  step "$OUT/card0.log" $B python bench/checks/host_ops.py --calls 100 --samples 7
  step "$OUT/card0.log" $A python bench/checks/host_parts.py --batch 16 --steps 30 --repeats 4
  step "$OUT/card0.log" $B python bench/checks/host_parts.py --batch 16 --steps 30 --repeats 4
  ;;
thirtieth2)  # round 15: the step, $OLD's paperlib and the working tree's in turn, at 16 and 128 x 128 (bf16)
  OLD=${OLD:-_ab_old}
  for i in 1 2 3; do
    for v in old new; do
      if [ $v = old ]; then E="env PYTHONPATH=$OLD:$PYTHONPATH TORCH_EXTENSIONS_DIR=/tmp/tex_old"
      else E="env TORCH_EXTENSIONS_DIR=/tmp/tex_new"; fi
      for b in 16 128; do
        step "$OUT/card0.log" $E python bench/bench_loraild.py --dtypes bf16 --batch $b --modes cached --steps 30 \
          --warmup 8 --repeats 2 --methods vanilla_kd loraild_fixed --lora-paths fused --json "$OUT/ab_${v}_b${b}_$i.json"
      done
    done
  done
  ;;
thirtieth3)  # round 15: device launches and host calls per step, $OLD's paperlib against the working tree's
  OLD=${OLD:-_ab_old}
  step "$OUT/card0.log" env PYTHONPATH=$OLD:$PYTHONPATH TORCH_EXTENSIONS_DIR=/tmp/tex_old \
    python bench/checks/launches_per_step.py --methods vanilla_kd loraild_fixed loraild_average loraild_random_step
  step "$OUT/card0.log" env TORCH_EXTENSIONS_DIR=/tmp/tex_new \
    python bench/checks/launches_per_step.py --methods vanilla_kd loraild_fixed loraild_average loraild_random_step
  ;;
thirtyfirst1)  # round 15, last call: the bf16 step at 128 x 128 with the round's code, then the fused-LoRA GPU tests
  step "$OUT/card0.log" python bench/bench_loraild.py --dtypes bf16 --batch 128 --modes cached --steps 20 --warmup 8 \
    --repeats 4 --methods vanilla_kd loraild_fixed --lora-paths fused --json "$OUT/loraild_steps_b128_r15.json"
  step "$OUT/card0.log" python -m pytest -q -p no:cacheprovider tests/loraild/test_loraild_fused_lora.py -k cuda
  ;;
thirtysecond1)  # round 16: the host's calls per step by name, Vanilla KD against LoRAILD Fixed; the step's host parts
  step "$OUT/card0.log" python bench/checks/host_by_op.py --batch 16 --steps 10 --top 60
  step "$OUT/card0.log" python bench/checks/host_parts.py --batch 16 --steps 40 --repeats 5 \
    --methods vanilla_kd loraild_fixed
  ;;
thirtysecond2)  # round 16: the layer's LoRA-A features with three masks drawn in one call against three
  step "$OUT/card0.log" python bench/checks/one_draw_dropout.py
  ;;
thirtysecond3)  # round 16: calls by name again (steps' events only), then the final code's step at 128 x 128 in bf16
  # (with both methods' device-busy time per step) and fp32, where the device bounds it
  step "$OUT/card0.log" python bench/checks/host_by_op.py --batch 16 --steps 10 --top 45
  step "$OUT/card0.log" python bench/bench_loraild.py --dtypes bf16 --batch 128 --modes cached --steps 20 --warmup 8 \
    --repeats 6 --methods vanilla_kd loraild_fixed --lora-paths fused --profile "$OUT/profile_b128.txt" \
    --profile-method vanilla_kd loraild_fixed --json "$OUT/loraild_steps_b128_r16.json"
  step "$OUT/card0.log" python bench/bench_loraild.py --dtypes fp32 --batch 128 --modes cached --steps 30 --warmup 5 \
    --repeats 3 --methods vanilla_kd loraild_fixed --lora-paths fused --json "$OUT/loraild_steps_fp32_b128_r16.json"
  ;;
thirtythird1)  # round 16, last call: both methods' device time over the timed steps alone (bench_loraild --profile now
  # leaves model building and warm-up out), bf16 at 128 x 128
  step "$OUT/card0.log" python bench/bench_loraild.py --dtypes bf16 --batch 128 --modes cached --steps 20 --warmup 8 \
    --repeats 3 --methods vanilla_kd loraild_fixed --lora-paths fused --profile "$OUT/profile_b128.txt" \
    --profile-method vanilla_kd loraild_fixed --json "$OUT/loraild_steps_b128_r16_last.json"
  ;;
*)
  echo "usage: bash bench/run_gpu_benches.sh single|multi|sweep|final|third1|third2|fourth1|fourth2|fifth1|fifth2|sixth1|sixth2|seventh1|seventh2prep|seventh2|eighth1prep|eighth1|ninth1|tenth1prep|tenth1|tenth2|eleventh1prep|eleventh1|twelfth1prep|twelfth1|thirteenth1|fourteenth1|fifteenth1|sixteenth1|seventeenth1|eighteenth1|nineteenth1|twentieth1|twentyfirst1|twentysecond1|twentythird1|twentyfourth1|twentyfifth1|twentyfifth2|twentyfifth3|twentysixth1|twentyseventh1|twentyeighth1|twentyeighth2|twentyninth1|twentyninth2|twentyninth3|thirtieth1|thirtieth2|thirtieth3|thirtyfirst1|thirtysecond1|thirtysecond2|thirtysecond3|thirtythird1" >&2
  exit 2
  ;;
esac
for log in "$OUT"/*.log; do echo "===== $log"; grep -v '^{' "$log" | tail -n 40; done
tar czf "$DEST/bench-${1:-single}.tgz" -C "$OUT" . && rm -rf "$OUT"
ls -la "$DEST"
