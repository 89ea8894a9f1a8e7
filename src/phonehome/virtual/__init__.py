"""Virtual phones and their network lab: the whole product runs for real with no phone attached.

The phone side (:mod:`~phonehome.virtual.phone`, :mod:`~phonehome.virtual.shell`,
:mod:`~phonehome.virtual.u2server`) is served by :class:`~phonehome.virtual.adbserver.AdbServer`, which the
unmodified adbutils, uiautomator2 and Debian's ``adb`` talk to; the network side (netlab, fakenet, firmware) makes
the traffic real. ``Lab`` in :mod:`~phonehome.virtual.lab` composes both.

See ``docs/architecture.md`` for the module map; nothing here is imported by :mod:`phonehome.plugin` eagerly.
"""
