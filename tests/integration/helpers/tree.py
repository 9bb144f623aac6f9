"""Fork grandchildren that hold (or drop) our stdout, write their pids to PIDFILE, then act.

Grandchild 1 ignores SIGTERM (only SIGKILL stops it); grandchild 2 does not. Both sleep up to --lifetime
seconds so a failed test cannot leave them for long.

usage: tree.py PIDFILE [--then exit|hang|chatter] [--quiet-children] [--escape]
  --then exit      the main process exits at once (the tree stays behind)
  --then hang      print one line, then silence
  --then chatter   print a line every 50 ms forever
  --quiet-children grandchildren point stdout/stderr at /dev/null (they no longer hold our pipes)
  --escape         grandchildren call setsid(): they leave our process group but keep the pipes
"""

import argparse
import os
import signal
import sys
import time

parser = argparse.ArgumentParser()
parser.add_argument("pidfile")
parser.add_argument("--then", choices=["exit", "hang", "chatter"], default="exit")
parser.add_argument("--quiet-children", action="store_true")
parser.add_argument("--escape", action="store_true")
parser.add_argument("--lifetime", type=float, default=60.0)
args = parser.parse_args()


def grandchild(ignore_term: bool) -> None:
    if args.escape:
        os.setsid()
    if ignore_term:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
    if args.quiet_children:
        null = os.open(os.devnull, os.O_RDWR)
        os.dup2(null, 1)
        os.dup2(null, 2)
    time.sleep(args.lifetime)


def fork(ignore_term: bool) -> int:
    pid = os.fork()
    if pid == 0:
        try:
            grandchild(ignore_term)
        finally:
            os._exit(0)
    return pid


sys.stdout.flush()
pids = [fork(ignore_term=True), fork(ignore_term=False)]
tmp = args.pidfile + ".tmp"
with open(tmp, "w") as file:
    file.write(" ".join(str(pid) for pid in pids))
os.rename(tmp, args.pidfile)
print("started", flush=True)
if args.then == "hang":
    time.sleep(args.lifetime)
while args.then == "chatter":
    print("working", flush=True)
    time.sleep(0.05)
