"""Print TEXT lines (if any), then hang silently until killed (or for --lifetime seconds).

usage: hang.py [TEXT ...] [--ignore-term] [--lifetime S]
"""

import argparse
import signal
import time

parser = argparse.ArgumentParser()
parser.add_argument("text", nargs="*")
parser.add_argument("--ignore-term", action="store_true")
parser.add_argument("--lifetime", type=float, default=120.0)
args = parser.parse_args()

if args.ignore_term:
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
for text in args.text:
    print(text, flush=True)
time.sleep(args.lifetime)
