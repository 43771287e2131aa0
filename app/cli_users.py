"""`crm-guard users add|list|remove`: the named API users of `api_users_file` (app/web/users.py).

* `add NAME --role reviewer|operator` creates a token, stores its SHA-256 in the file and prints
  the token once (stdout, nothing else there: `TOKEN=$(crm-guard users add ann --role reviewer)`);
* `list` prints name and role per user;
* `remove NAME` revokes a user (a running guard stops accepting the token within a second).
The file is `--file`, else the configured `api_users_file` (CRM_GUARD_API_USERS_FILE).
"""

from __future__ import annotations

import argparse
import sys

from app.config import SettingsError, load_settings
from app.web.users import ROLES, UsersFileError, add_user, read_users, remove_user


def _users_file(args: argparse.Namespace) -> str:
    if args.file:
        return str(args.file)
    path = load_settings(file=args.config).api_users_file
    if not path:
        raise UsersFileError("no users file: pass --file or set CRM_GUARD_API_USERS_FILE (api_users_file)")
    return path


def _run(args: argparse.Namespace) -> int:
    try:
        path = _users_file(args)
        if args.users_command == "add":
            token = add_user(path, args.name, args.role)
            print(token)
            print(f"crm-guard users: {args.name} ({args.role}) added to {path}; the token above is shown "
                  "once: give it to them (CRM_GUARD_API_TOKEN for the CLI, the token box on /review)",
                  file=sys.stderr)
        elif args.users_command == "remove":
            remove_user(path, args.name)
            print(f"crm-guard users: {args.name} removed from {path}", file=sys.stderr)
        else:
            for user in read_users(path):
                print(f"{user.name}\t{user.role}")
    except (UsersFileError, SettingsError) as exc:
        print(f"crm-guard users {args.users_command}: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:
        where = exc.filename or ""
        print(f"crm-guard users {args.users_command}: {where}: {exc.strerror or exc}", file=sys.stderr)
        return 2
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    """Add `users add`, `users list`, `users remove`."""
    users = subparsers.add_parser("users", help="named API users: a token and a role each (api_users_file)")
    sub = users.add_subparsers(dest="users_command", metavar="SUBCOMMAND")
    sub.required = True
    add = sub.add_parser("add", help="add a user; prints their new token once")
    add.add_argument("name", help="who they are, recorded on their decisions (e.g. an e-mail address)")
    add.add_argument("--role", required=True, choices=ROLES,
                     help="reviewer: decide proposals; operator: also pin autonomy and resume agents")
    listing = sub.add_parser("list", help="name and role of every user")
    remove = sub.add_parser("remove", help="revoke a user's token")
    remove.add_argument("name")
    for parser in (add, listing, remove):
        parser.add_argument("--file", metavar="FILE", help="the users file (default: api_users_file)")
        parser.add_argument("--config", metavar="FILE")
        parser.set_defaults(func=_run)
