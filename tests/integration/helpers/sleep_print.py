"""Sleep SECONDS, then print each TEXT on its own line and exit.

usage: sleep_print.py SECONDS [TEXT ...]
"""

import sys
import time

time.sleep(float(sys.argv[1]))
for text in sys.argv[2:]:
    print(text, flush=True)
