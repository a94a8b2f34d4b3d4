"""Who may use which priority.

Looked up at each request rather than cached, so adding a user to a group in
``high_groups`` takes effect without a reload, as an operator expects from Unix groups.
"""

from __future__ import annotations

import grp
import os
import pwd

from .config import AccessConfig

HIGH = 0
NORMAL = 1


def user_name(uid: int) -> str:
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return str(uid)


def may_use_high(access: AccessConfig, uid: int) -> bool:
    """Root always; otherwise the user must be listed, or be in a listed group."""
    if uid == 0:
        return True
    try:
        pw = pwd.getpwuid(uid)
    except KeyError:
        return False
    if pw.pw_name in access.high_users:
        return True
    if not access.high_groups:
        return False
    try:
        gids = set(os.getgrouplist(pw.pw_name, pw.pw_gid))
    except OSError:
        gids = {pw.pw_gid}
    for name in access.high_groups:
        try:
            if grp.getgrnam(name).gr_gid in gids:
                return True
        except KeyError:
            continue
    return False


def granted_prio(access: AccessConfig, uid: int, requested: int) -> int:
    """The most urgent level a user gets: ``high`` is clamped to ``normal`` without the right."""
    if requested <= HIGH and not may_use_high(access, uid):
        return NORMAL
    return requested
