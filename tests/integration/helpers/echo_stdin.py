"""Read all of stdin. Default: print JSON {bytes, sha256, devnull}. --copy: copy stdin to stdout as it
arrives (the deadlock test). --ignore: exit at once without reading.

usage: echo_stdin.py [--copy | --ignore]
"""

import hashlib
import json
import os
import stat
import sys

mode = sys.argv[1] if len(sys.argv) > 1 else ""
if mode == "--ignore":
    sys.exit(0)
digest = hashlib.sha256()
size = 0
while chunk := os.read(0, 65536):
    size += len(chunk)
    if mode == "--copy":
        sys.stdout.buffer.write(chunk)
        sys.stdout.buffer.flush()
    else:
        digest.update(chunk)
if mode != "--copy":
    st, null = os.fstat(0), os.stat(os.devnull)
    is_null = stat.S_ISCHR(st.st_mode) and st.st_rdev == null.st_rdev
    print(json.dumps({"bytes": size, "sha256": digest.hexdigest(), "devnull": is_null}))
