"""Fixtures for the daemon's tests: see daemon_fixture.py (reusable from other test folders)."""

from daemon_fixture import fikitd_daemon, fk_root  # noqa: F401
