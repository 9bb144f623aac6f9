"""Print the whole environment as one JSON object on stdout."""

import json
import os

print(json.dumps(dict(os.environ)))
