"""`crm-guard users add|list|remove` as a person runs them: the token once on stdout, errors exit 2."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from app.web.users import UsersFile

ROOT = Path(__file__).resolve().parents[2]


def users(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(  # noqa: S603
        [sys.executable, "-m", "app.cli", "users", *args], cwd=str(ROOT), capture_output=True, text=True,
        timeout=60, env={**os.environ, **(env or {})},
    )


def test_add_prints_a_working_token_once_list_and_remove(tmp_path: Path) -> None:
    path = tmp_path / "users"
    added = users("add", "ann@acme.io", "--role", "reviewer", "--file", str(path))
    assert added.returncode == 0, added.stderr
    token = added.stdout.strip()
    assert token.startswith("cgu_") and "\n" not in token  # stdout holds the token alone
    assert "shown once" in added.stderr and token not in path.read_text()
    assert UsersFile(path).lookup(token).name == "ann@acme.io"  # type: ignore[union-attr]

    env = {"CRM_GUARD_API_USERS_FILE": str(path)}  # the configured file, without --file
    assert users("add", "ops", "--role", "operator", env=env).returncode == 0
    listed = users("list", env=env)
    assert (listed.returncode, listed.stdout) == (0, "ann@acme.io\treviewer\nops\toperator\n")
    assert users("remove", "ann@acme.io", env=env).returncode == 0
    assert UsersFile(path).lookup(token) is None
    assert users("list", env=env).stdout == "ops\toperator\n"


def test_user_errors_say_what_and_exit_2(tmp_path: Path) -> None:
    path = tmp_path / "users"
    assert users("add", "ann", "--role", "reviewer", "--file", str(path)).returncode == 0
    cases = [
        (("add", "ann", "--role", "operator", "--file", str(path)), "ann is already a user"),
        (("add", "two words", "--role", "reviewer", "--file", str(path)), "bad name 'two words'"),
        (("remove", "nobody", "--file", str(path)), "no user named nobody"),
        (("list", "--file", str(tmp_path / "missing")), "No such file or directory"),
        (("list",), "no users file: pass --file or set CRM_GUARD_API_USERS_FILE"),
    ]
    for args, message in cases:
        done = users(*args, env={"CRM_GUARD_API_USERS_FILE": ""})
        assert done.returncode == 2 and message in done.stderr and "Traceback" not in done.stderr, (args, done.stderr)
    bad_role = users("add", "carl", "--role", "admin", "--file", str(path))
    assert bad_role.returncode == 2 and "invalid choice: 'admin'" in bad_role.stderr
