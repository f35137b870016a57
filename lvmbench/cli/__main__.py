"""``python -m lvmbench.cli ...`` (torchrun runs the pretrainer this way)."""

from lvmbench.cli import main

main()
