"""`python -m tui.cli ARGS` runs `lmwb ARGS`: how background runs, torchrun's ranks and the benchmarks start it."""

import sys

from tui.cli import main

if __name__ == "__main__":
    sys.exit(main())
