"""``python -m training --config training/configs/X.yaml [--out DIR] [--resume]`` (``--help`` for all)."""

from training.train import main

raise SystemExit(main())
