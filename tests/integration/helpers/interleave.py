"""Write to stdout and stderr in turns, pausing between writes so a reader sees them in this order:
stdout "abc" (no newline), stderr "e1\\ne2", stdout "def\\n", stderr " tail\\n".

usage: interleave.py [PAUSE_S]
"""

import os
import sys
import time

pause = float(sys.argv[1]) if len(sys.argv) > 1 else 0.2
for fd, data in ((1, b"abc"), (2, b"e1\ne2"), (1, b"def\n"), (2, b" tail\n")):
    os.write(fd, data)
    time.sleep(pause)
