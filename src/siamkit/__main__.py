"""``python -m siamkit``: the ``siamkit`` command line (what ``torchrun -m siamkit`` starts)."""

from siamkit.cli import main

if __name__ == "__main__":
    raise SystemExit(main())
