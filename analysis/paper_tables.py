"""The paper's Tables 1–3 beside ours, the honest comparison and every setting, as Markdown, CSV and LaTeX.

    python analysis/paper_tables.py RESULTS [RESULTS ...] --out DIR
"""

import sys

from prunerlib.analysis.command import tables_main

if __name__ == "__main__":
    sys.exit(tables_main())
