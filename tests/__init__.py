"""refstream's tests (see tests/conftest.py)."""

import os

# An xdist worker (`make test` runs two) starts with COLUMNS=80 and LINES=24 in its environment,
# which a serial session does not have: rich's Console takes them, when it is created at import
# (deploy/cli.py, deploy/replay.py), as a fixed width, so a CLI test setting COLUMNS for its run
# would still get 80 columns. This runs before any test module imports them.
if os.environ.get("PYTEST_XDIST_WORKER"):
    for name in ("COLUMNS", "LINES"):
        os.environ.pop(name, None)
