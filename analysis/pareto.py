"""Figures alone: accuracy against sparsity and speedup, and per pruning cycle.

    python analysis/pareto.py RESULTS [RESULTS ...] --out DIR
"""

import sys

from prunerlib.analysis.command import figures_main

if __name__ == "__main__":
    sys.exit(figures_main())
