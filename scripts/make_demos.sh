#!/usr/bin/env bash
# Remake the demo models shipped in sequnet_cli/demo_checkpoints/ with `sequnet train` itself,
# each stored in half precision with its command, seed, data and scores (`sequnet export-demo`):
#
# - piano-small on the piano-render corpus: the preset's network (32 channels, 10 levels, a
#   second of context), shaped to generate in real time on one CPU thread. On a CPU it trains
#   in bfloat16 autocast on one thread, for PIANO_STEPS steps (hours; see the README for the
#   shipped demo's history); on a GPU (DEVICE=cuda) for PIANO_MINUTES minutes at a batch of 16.
# - jsb: its preset's 200 epochs (about 7 minutes of one CPU thread).
#
#   scripts/make_demos.sh [DATA]   DATA holds piano-render/ and polyphonic/ (default ../shared/data)
#   DEVICE=cuda PIANO_MINUTES=5 scripts/make_demos.sh .device/data     # on a GPU machine
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
    limit=(--device cpu --threads 1 --steps "${PIANO_STEPS:-20000}" --set train.precision=bf16)
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
