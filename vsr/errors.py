"""The user's mistakes, as one exception type every layer can raise and the CLI reports as one line.

``vsr_cli.main`` turns :class:`UsageError` — and the shared layer's own input errors (``ArtifactError``,
``DeviceError``, ``VideoError``) — into ``error: <message>`` on stderr and exit status 2, never a traceback.
"""

from __future__ import annotations


class UsageError(ValueError):
    """A bad input or flag (missing file, unreadable checkpoint, invalid setting): reported as ``error: ...``."""
