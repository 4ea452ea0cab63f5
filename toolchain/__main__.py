"""``python -m toolchain`` is ``keep``."""

from toolchain.cli import entry

entry()
