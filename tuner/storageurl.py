"""Storage URLs in messages and records: one function per way of showing a URL, none of them revealing a password.

``mask_url`` is still a URL (recorded in model.json, pasted back as ``--storage``); ``describe_storage``
says where the studies live, for a reader; ``storage_location`` names the server and database alone
(no user name either), for errors about reaching them. SQLAlchemy is imported inside the functions:
the command line reads ``DEFAULT_STORAGE`` at start-up, long before it touches a database.
"""

from __future__ import annotations

from pathlib import Path

__all__ = ["DEFAULT_STORAGE", "mask_url", "describe_storage", "storage_location"]

DEFAULT_STORAGE = "sqlite:///tuner.db"


def mask_url(url: str) -> str:
    """The URL with any password replaced by ***, safe to print or store."""
    from sqlalchemy.engine import make_url

    try:
        return make_url(url).render_as_string(hide_password=True)
    except Exception:
        return "<unparseable storage URL>"


def describe_storage(url: str) -> str:
    """Where the studies live: the absolute file for SQLite, the masked URL otherwise."""
    from sqlalchemy.engine import make_url

    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite" and parsed.database not in (None, "", ":memory:"):
        return f"SQLite file {Path(parsed.database).resolve()}"
    return mask_url(url)


def storage_location(url: str) -> str:
    """Backend, database and host of a storage URL, for messages about reaching it; never the user or password."""
    from sqlalchemy.engine import make_url

    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        return f"SQLite file {parsed.database}"
    host = parsed.host or "localhost"
    port = f":{parsed.port}" if parsed.port else ""
    return f"{parsed.get_backend_name()} database {parsed.database!r} on {host}{port}"
