"""Suite-wide settings for the privacy suite in ``tests/`` (and anything else run from this rootdir).

The phonehome plugin itself is installed with a ``pytest11`` entry point; the suite's knobs are the
``phonehome_*`` ini keys in pyproject.toml, the ``PHONEHOME_*`` environment variables and devices.yaml. This
file only keeps pytest away from folders that hold data, not tests.
"""

from __future__ import annotations

#: firmware profiles, captures and reports are data; benchmarks run on their own (see benchmarks/)
collect_ignore = ["fixtures", "results", "reports", "benchmarks", "node_modules"]
