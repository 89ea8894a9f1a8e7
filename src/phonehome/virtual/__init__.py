"""Virtual phones and their network lab: the whole product runs for real with no phone attached.

See ``docs/architecture.md`` for the module map; nothing here is imported by :mod:`phonehome.plugin` eagerly.
"""
