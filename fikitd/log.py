"""Logging to stderr with journald priority prefixes.

Under systemd, stderr goes to the journal, which reads a leading ``<N>`` as the syslog
priority of the line; outside systemd the prefix is still harmless and greppable.  One
line per event keeps the journal readable and tests able to match on messages.
"""

from __future__ import annotations

import logging
import sys

_PRIORITY = {
    logging.CRITICAL: 2,
    logging.ERROR: 3,
    logging.WARNING: 4,
    logging.INFO: 6,
    logging.DEBUG: 7,
}


class JournalFormatter(logging.Formatter):
    """Prefix ``<N>`` so journald files the line at the right priority."""

    def format(self, record: logging.LogRecord) -> str:
        prio = _PRIORITY.get(record.levelno, 6)
        text = super().format(record)
        # A multi-line message (a traceback) would lose its priority after the first line.
        return "\n".join(f"<{prio}>{line}" for line in text.splitlines() or [""])


def setup(level: int = logging.INFO) -> logging.Logger:
    """Send the ``fikitd`` logger to stderr, once, whatever was configured before."""
    logger = logging.getLogger("fikitd")
    logger.handlers.clear()
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JournalFormatter("%(name)s: %(message)s"))
    logger.addHandler(handler)
    logger.setLevel(level)
    logger.propagate = False
    return logger


def get(name: str) -> logging.Logger:
    """A child of the ``fikitd`` logger, so one handler serves every module."""
    return logging.getLogger(f"fikitd.{name}")
