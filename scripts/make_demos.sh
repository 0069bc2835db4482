#!/usr/bin/env bash
# Remake the demo models shipped in sequnet_cli/demo_checkpoints/ with `sequnet train` itself:
# piano-small on the piano-render corpus (2,200 steps: about 15 minutes of a 2-core CPU) and jsb
# (its preset's 200 epochs), each stored in half precision with its command, seed, data and scores (`sequnet export-demo`).
#
#   scripts/make_demos.sh [DATA]   DATA holds piano-render/ and polyphonic/ (default ../shared/data)
#
# Run it from the repository root on a quiet machine; the runs go to a temporary SEQUNET_HOME.
set -euo pipefail
data=$(cd "${1:-../shared/data}" && pwd)
export SEQUNET_HOME
SEQUNET_HOME=$(mktemp -d)
export SEQUNET_DATA_DIR="$data/polyphonic"
sequnet=${SEQUNET:-sequnet}

piano="sequnet train piano-small --data piano-render --seed 0 --steps 2200 --threads 2"
$sequnet train piano-small --data "$data/piano-render" --seed 0 --steps 2200 --threads 2
$sequnet export-demo piano-small --command "$piano" \
    --data-name "piano-render: Piano-midi.de pieces rendered with the FluidR3 GM piano"

jsb="sequnet train jsb --seed 0"
$sequnet train jsb --seed 0
$sequnet export-demo jsb --command "$jsb" --data-name "JSB Chorales (Allan & Williams 2005)"

size=$(du -cb sequnet_cli/demo_checkpoints/*.pt | tail -1 | cut -f1)
echo "demo models: $size bytes in all (at most 5,000,000)"
test "$size" -le 5000000
