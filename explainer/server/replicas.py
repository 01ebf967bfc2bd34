"""Which server process served a page: one of several replicas behind a load balancer, or this app before a restart.

A page's session (its recorded walks, the tour's step, the chosen model) lives in the process that served the page.
When that process stops, a load balancer sends the page's next event to another one, which holds no such session:
the event would run on fresh state (a scrubber with no walk, another model than the page shows) or fail obscurely.
So each process names itself in a cookie on the page it serves, and the request guard answers an event from a page
that another process served, for a session this process does not hold, with ``RESTARTED``.
"""
from __future__ import annotations

import hashlib
import re
import secrets

SERVER_ID = secrets.token_hex(8)  # this process's name: new at every start, so a restart counts as another process
RESTARTED = ("The server restarted: reload the page. (This page's walks and settings were kept by a server "
             "process that has stopped.)")
RESTARTED_STATUS = 410  # Gone: the session is
PAGE = re.compile(r"^/(?:config/?)?$")  # the page (GET /) and its config (GET /config, where API clients start)


def cookie_name(host: str) -> str:
    """The cookie's name for the address the browser used (host and port): browsers share cookies across the ports
    of one host, and two apps served from one machine must not overwrite each other's."""
    return "ddpm_explainer_server_" + hashlib.sha1(host.encode("latin-1")).hexdigest()[:8]


def set_cookie(host: str, server_id: str = SERVER_ID) -> bytes:
    """The Set-Cookie header's value that names this process for pages served at ``host``."""
    return f"{cookie_name(host)}={server_id}; Path=/; HttpOnly; SameSite=Lax".encode("latin-1")


def cookie(header: str | None, name: str) -> str | None:
    """The value of cookie ``name`` in a Cookie header (None when absent)."""
    for part in (header or "").split(";"):
        key, _, value = part.strip().partition("=")
        if key == name:
            return value.strip().strip('"')
    return None


def served_elsewhere(cookie_header: str | None, host: str, server_id: str = SERVER_ID) -> bool:
    """Whether the request comes from a page that another process (or this app before a restart) served."""
    served_by = cookie(cookie_header, cookie_name(host))
    return served_by is not None and served_by != server_id
