"""The ``keep`` command: tier 5, the thin CLI on top of everything else.

``keep.cli`` parses arguments and calls one library function per command; nothing below this
package imports it (``tests/test_architecture.py``). ``python -m keep`` is the command.
"""
