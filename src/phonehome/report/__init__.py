"""Reports of a phonehome run.

- :mod:`phonehome.report.allure_results` — the Allure reporter (the one module that imports ``allure``), a plugin
  object registered by phonehome's pytest plugin only when ``--alluredir`` is given.
- :mod:`phonehome.report.diff` — "what changed since the previous run": destinations and findings per device.
- :mod:`phonehome.report.generate` — runs the pinned Allure 3 generator and strips its analytics, so that the
  report a privacy tool publishes never phones home itself.

Importing this package imports nothing heavy.
"""

from __future__ import annotations
