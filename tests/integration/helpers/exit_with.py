"""Print `bye` on stderr, then exit with CODE, or die by signal NAME (e.g. KILL, TERM).

usage: exit_with.py CODE|NAME
"""

import os
import signal
import sys

print("bye", file=sys.stderr, flush=True)
what = sys.argv[1]
if what.isdigit():
    sys.exit(int(what))
os.kill(os.getpid(), getattr(signal, "SIG" + what))
