#!/usr/bin/env bash
# Remake the demo models shipped in sequnet_cli/demo_checkpoints/ with `sequnet train` itself,
# each stored in half precision with its command, seed, data and scores (`sequnet export-demo`):
#
# - piano-small on the piano-render corpus. On a CPU (the default) the shipped demo: 2,200
#   steps of a 6-level network of 64 channels (63 ms of context), the shape the preset had when
#   the demo was made, on two threads (about 15 minutes). On a GPU (DEVICE=cuda) the preset's
#   own network (10 levels of 32 channels, a second of context, shaped to generate in real
#   time on one CPU thread) for PIANO_MINUTES minutes at a batch of 16.
# - jsb: its preset's 200 epochs (about 7 minutes of one CPU thread).
#
#   scripts/make_demos.sh [DATA]   DATA holds piano-render/ and polyphonic/ (default ../shared/data)
#   DEVICE=cuda PIANO_MINUTES=5 scripts/make_demos.sh DATA     # on a GPU machine
#
# Run it from the repository root on a quiet machine; the runs go to a temporary SEQUNET_HOME.
set -euo pipefail
data=$(cd "${1:-../shared/data}" && pwd)
device=${DEVICE:-cpu}
export SEQUNET_HOME
SEQUNET_HOME=$(mktemp -d)
export SEQUNET_DATA_DIR="$data/polyphonic"
sequnet=${SEQUNET:-sequnet}

if [ "$device" = cuda ]; then
    limit=(--device cuda --minutes "${PIANO_MINUTES:-5}" --set train.batch_size=16)
else
    limit=(--device cpu --steps 2200 --threads 2 --set model.channels=64 --set model.levels=6
        --set data.excerpt_targets=2000 --set train.batch_size=4 --set train.eval_every=100)
fi
piano="sequnet train piano-small --data piano-render --seed 0 ${limit[*]}"
$sequnet train piano-small --data "$data/piano-render" --seed 0 "${limit[@]}"
$sequnet export-demo piano-small --command "$piano" \
    --data-name "piano-render: Piano-midi.de pieces rendered with the FluidR3 GM piano"

jsb="sequnet train jsb --seed 0 --threads 1"
$sequnet train jsb --seed 0 --threads 1
$sequnet export-demo jsb --command "$jsb" --data-name "JSB Chorales (Allan & Williams 2005)"

size=$(du -cb sequnet_cli/demo_checkpoints/*.pt | tail -1 | cut -f1)
echo "demo models: $size bytes in all (at most 8,000,000)"
test "$size" -le 8000000
