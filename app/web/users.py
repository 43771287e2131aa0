"""Named API users: who approved a proposal or resumed an agent, from the token they hold.

With one shared `api_token` every holder is the same operator and the reviewer name is whatever
they type. A users file gives each person a token of their own and a role:

    # name      role      token digest (crm-guard users add NAME --role ROLE writes these lines)
    ann@acme.io reviewer  sha256:9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08
    ops-oncall  operator  sha256:...

* `reviewer`: decide proposals (approve, modify, reject, batch-approve);
* `operator`: everything a reviewer may, and pin an agent's autonomy, resume a paused agent.

Only the SHA-256 of each token is stored (tokens are 256 random bits, so a plain digest is
enough; nothing to salt against). The guard re-reads the file when it changes, so adding or
revoking a person takes effect within a second, without a restart; a file that stops parsing
keeps the last good list and is logged.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
import secrets
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger(__name__)

ROLES = ("reviewer", "operator")
"""Weakest first: a role may do what the roles before it may."""

NAME_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._@+-]{0,63}$")
DIGEST_PATTERN = re.compile(r"^sha256:[0-9a-f]{64}$")
TOKEN_PREFIX = "cgu_"  # noqa: S105 - a prefix, not a secret
RELOAD_EVERY_S = 1.0


class UsersFileError(ValueError):
    """A users file that does not parse; the message names the file and line."""


@dataclass(frozen=True)
class ApiUser:
    name: str
    role: str

    def may(self, role: str) -> bool:
        """Whether this user's role includes `role`."""
        return ROLES.index(self.role) >= ROLES.index(role)


def digest(token: str) -> str:
    """The form a token is stored in: `sha256:<hex>`."""
    return "sha256:" + hashlib.sha256(token.encode()).hexdigest()


def new_token() -> str:
    """A fresh token: 256 random bits, prefixed so a leaked one is recognisable in a scanner."""
    return TOKEN_PREFIX + secrets.token_urlsafe(32)


@dataclass(frozen=True)
class UserLine:
    name: str
    role: str
    digest: str


def parse_users(text: str, origin: str = "users file") -> list[UserLine]:
    """The users of a file's text; UsersFileError (with the line number) on the first bad line."""
    users: list[UserLine] = []
    names: set[str] = set()
    digests: set[str] = set()
    for number, line in enumerate(text.splitlines(), start=1):
        content = line.split("#", 1)[0].strip()
        if not content:
            continue
        parts = content.split()
        where = f"{origin}:{number}"
        if len(parts) != 3:
            raise UsersFileError(f"{where}: expected `name role sha256:<hex>`, got {len(parts)} words")
        name, role, token_digest = parts
        if not NAME_PATTERN.match(name):
            raise UsersFileError(f"{where}: bad name {name[:64]!r} (letters, digits and . _ @ + -, "
                                 "at most 64)")
        if role not in ROLES:
            raise UsersFileError(f"{where}: role {role[:32]!r} is not one of {', '.join(ROLES)}")
        if not DIGEST_PATTERN.match(token_digest):
            raise UsersFileError(f"{where}: the token digest must be sha256:<64 hex digits>")
        if name in names:
            raise UsersFileError(f"{where}: {name} is listed twice")
        if token_digest in digests:
            raise UsersFileError(f"{where}: {name} has the same token as another user")
        names.add(name)
        digests.add(token_digest)
        users.append(UserLine(name, role, token_digest))
    return users


def read_users(path: str | Path) -> list[UserLine]:
    """The users of a file; UsersFileError when it cannot be read or parsed."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise UsersFileError(f"{path}: {exc.strerror if isinstance(exc, OSError) else exc}") from exc
    return parse_users(text, str(path))


class UsersFile:
    """The users file as the web server reads it: looked up by token, re-read when it changes."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self._by_digest: dict[str, ApiUser] = {}
        self._stamp: tuple[int, int, int] | None = None
        self._checked = 0.0
        self._load(self._file_stamp())  # a bad file at start is the caller's error to report

    def lookup(self, token: str) -> ApiUser | None:
        """The user holding `token`, or None."""
        self._maybe_reload()
        return self._by_digest.get(digest(token))

    def _file_stamp(self) -> tuple[int, int, int] | None:
        """What tells a changed file: `users add` replaces it (new inode), an editor may rewrite it."""
        try:
            stat = self.path.stat()
        except OSError:
            return None
        return stat.st_ino, stat.st_mtime_ns, stat.st_size

    def _load(self, stamp: tuple[int, int, int] | None) -> None:
        users = read_users(self.path)
        self._by_digest = {u.digest: ApiUser(u.name, u.role) for u in users}
        self._stamp = stamp

    def _maybe_reload(self) -> None:
        now = time.monotonic()
        if now - self._checked < RELOAD_EVERY_S:
            return
        self._checked = now
        stamp = self._file_stamp()
        if stamp == self._stamp:
            return
        try:
            self._load(stamp)
            log.info("users file %s re-read: %d users", self.path, len(self._by_digest))
        except UsersFileError as exc:
            self._stamp = stamp  # log once per change, not once per request
            log.error("users file changed but does not parse; keeping the previous %d users: %s",
                      len(self._by_digest), exc)


# ---- editing the file (the `crm-guard users` commands) ------------------------------------------


def add_user(path: str | Path, name: str, role: str) -> str:
    """Add a user with a new token; returns the token (shown once, stored only as its digest)."""
    path = Path(path)
    if not NAME_PATTERN.match(name):
        raise UsersFileError(f"bad name {name[:64]!r}: letters, digits and . _ @ + -, at most 64, no spaces")
    if role not in ROLES:
        raise UsersFileError(f"role {role[:32]!r} is not one of {', '.join(ROLES)}")
    users = read_users(path) if path.exists() else []
    if any(u.name == name for u in users):
        raise UsersFileError(f"{path}: {name} is already a user (remove it first to issue a new token)")
    token = new_token()
    users.append(UserLine(name, role, digest(token)))
    _write(path, users)
    return token


def remove_user(path: str | Path, name: str) -> None:
    """Remove a user (its token stops working at the guard's next re-read)."""
    path = Path(path)
    users = read_users(path)
    kept = [u for u in users if u.name != name]
    if len(kept) == len(users):
        raise UsersFileError(f"{path}: no user named {name}")
    _write(path, kept)


def _render(users: list[UserLine]) -> str:
    lines = ["# crm-guard API users: name role token-digest (crm-guard users add|remove edit this file)"]
    lines += [f"{u.name} {u.role} {u.digest}" for u in users]
    return "\n".join(lines) + "\n"


def _write(path: Path, users: list[UserLine]) -> None:
    """Atomically, readable by its owner only: a reader never sees half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as out:
            out.write(_render(users))
        os.chmod(tmp, 0o600)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
