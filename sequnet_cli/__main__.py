"""`python -m sequnet_cli`: the `sequnet` command (what `torchrun -m sequnet_cli` starts)."""

from sequnet_cli.app import main

main()
