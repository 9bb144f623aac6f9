"""Print the arguments (without the program name) as one JSON list on stdout."""

import json
import sys

print(json.dumps(sys.argv[1:]))
