"""The evidence manifest of a run (``manifest.json``, optionally signed with Ed25519) and ``phonehome verify``."""
