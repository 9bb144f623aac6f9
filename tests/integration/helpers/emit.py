"""Print BYTES bytes of `x` to stdout (or stderr), a newline every LINE bytes (0: no newlines), then exit.

usage: emit.py BYTES [--line N] [--stderr] [--end TEXT]
"""

import argparse
import sys

parser = argparse.ArgumentParser()
parser.add_argument("count", type=int)
parser.add_argument("--line", type=int, default=100)
parser.add_argument("--stderr", action="store_true")
parser.add_argument("--end", default="", help="text printed after the bytes (not counted)")
args = parser.parse_args()

out = sys.stderr.buffer if args.stderr else sys.stdout.buffer
line = b"x" * (args.line - 1) + b"\n" if args.line > 0 else b""
block = line * max(1, (1 << 20) // max(1, args.line)) if line else b"x" * (1 << 20)
left = args.count
while left > 0:
    chunk = block[:left]
    out.write(chunk)
    left -= len(chunk)
out.write(args.end.encode())
out.flush()
