"""Tables, figures and `report.md` for one or more sweeps' result files (the same as `prunerlib report`).

    python analysis/report.py RESULTS [RESULTS ...] --out DIR
"""

import sys

from prunerlib.analysis.command import report_main

if __name__ == "__main__":
    sys.exit(report_main())
