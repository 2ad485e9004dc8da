"""The one exception type for user mistakes (bad input, bad options, missing files).

The CLI prints a ``MedsslError`` as a single message and exits non-zero; anything else is a bug and keeps
its traceback.
"""

from __future__ import annotations


class MedsslError(Exception):
    """A problem with the user's input or options, stated in words the user can act on."""
