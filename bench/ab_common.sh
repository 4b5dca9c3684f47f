# Sourced by bench/ddp_settings_ab.sh and bench/ddp_variants_ab.sh: the stage-2 CLI arguments of their
# runs (LoRAILD Fixed, 3 epochs x 60 steps of 128 x 128 tokens) on the folder $W that
# `bench_sweep_gpus.py --prepare-only --out $W` prepared, and the 2-process launcher.
W=${W:-/tmp/sweep-bench}
OUT=${OUT:-/tmp}
M=$W/models
common="loraild --task sst2 --method loraild_fixed --seed 0 --glue-dir $W/glue --teacher $M/teacher --student $M/student
 --epochs 3 --ild-start 0 --teacher-epochs 1 --rank 32 --max-length 128 --pad-to-max-length --no-group-by-length
 --no-progress --batch-size 128 --max-train 7680 --max-test 872 --cluster-max-examples 872 --teacher-cache-max-gb 16"
launch2="python -m accelerate.commands.launch --multi_gpu --num_processes 2 --num_machines 1 --mixed_precision no --dynamo_backend no"
