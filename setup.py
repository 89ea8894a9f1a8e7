"""The C part of phonehome: everything else is in pyproject.toml.

``phonehome.scan._runs`` decodes the base64/base64url/base32/hex runs of the nested decoders in C. It is optional:
without a C compiler and Python's headers the install still succeeds and ``phonehome.scan.layers`` uses its
pure-Python decoders (the same output, slower; ``layers.ACCELERATED`` says which is in use).
"""

from setuptools import Extension, setup

setup(ext_modules=[Extension("phonehome.scan._runs", ["src/phonehome/scan/_runs.c"], optional=True)])
