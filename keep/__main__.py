"""``python -m keep`` is the ``keep`` command."""

from keep.cli import entry

entry()
