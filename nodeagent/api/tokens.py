"""Bearer tokens in DIR/tokens.csv, in upstream's static token file format.

Each line is `token,user,uid,"group1,group2"` (kube-apiserver --token-auth-file). The admin token
(user `admin`, group system:masters) is written at first start; `nodeagent kubeconfig --user node NAME`
appends system:node:NAME in group system:nodes. The server reloads the file when it changes, so
a node token minted while the server runs works at once.
"""

from __future__ import annotations

import csv
import fcntl
import io
import os
import secrets
from pathlib import Path

from nodeagent.api.auth.user import MASTERS_GROUP, NODE_USER_PREFIX, NODES_GROUP, UserInfo, node_user

ADMIN_USER = "admin"
# Older data dirs hold a token for the apiserver's own calls to kubelets, in system:masters: a
# kubelet that saw it could replay it as cluster-admin (issue 14). The apiserver now presents a
# client certificate to kubelets instead, and drops this line at start.
RETIRED_USERS = ("system:apiserver",)
__all__ = ["ADMIN_USER", "MASTERS_GROUP", "NODES_GROUP", "NODE_USER_PREFIX", "TokenAuthenticator", "UserInfo",
           "ensure_admin_tokens", "ensure_token", "node_user", "read_tokens", "tokens_path"]


def tokens_path(data_dir: Path) -> Path:
    return data_dir / "tokens.csv"


def _parse(text: str) -> dict[str, UserInfo]:
    out: dict[str, UserInfo] = {}
    for row in csv.reader(io.StringIO(text)):
        if len(row) < 2 or not row[0] or row[0].startswith("#") or row[1] in RETIRED_USERS:
            continue
        groups = tuple(g for g in (row[3].split(",") if len(row) > 3 else []) if g)
        out[row[0]] = UserInfo(name=row[1], uid=row[2] if len(row) > 2 else row[1], groups=groups)
    return out


def read_tokens(data_dir: Path) -> dict[str, UserInfo]:
    p = tokens_path(data_dir)
    return _parse(p.read_text()) if p.exists() else {}


def ensure_token(data_dir: Path, user: str, groups: tuple[str, ...]) -> str:
    """The token of `user`, appended to tokens.csv (mode 0600, under a flock) if missing."""
    data_dir.mkdir(parents=True, exist_ok=True)
    p = tokens_path(data_dir)
    fd = os.open(p, os.O_RDWR | os.O_CREAT, 0o600)
    with os.fdopen(fd, "r+") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        for token, info in _parse(f.read()).items():
            if info.name == user:
                return token
        token = secrets.token_hex(24)
        buf = io.StringIO()
        csv.writer(buf, quoting=csv.QUOTE_MINIMAL, lineterminator="\n").writerow(
            [token, user, user, ",".join(groups)])
        f.seek(0, os.SEEK_END)
        f.write(buf.getvalue())
        f.flush()
        os.fsync(f.fileno())
        return token


def ensure_admin_tokens(data_dir: Path) -> None:
    ensure_token(data_dir, ADMIN_USER, (MASTERS_GROUP,))
    retire_tokens(data_dir, RETIRED_USERS)


def retire_tokens(data_dir: Path, users: tuple[str, ...]) -> None:
    """Remove the lines of these users from tokens.csv (under the flock, atomically)."""
    p = tokens_path(data_dir)
    if not p.exists():
        return
    fd = os.open(p, os.O_RDWR, 0o600)
    with os.fdopen(fd, "r+") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        rows = list(csv.reader(io.StringIO(f.read())))
        keep = [row for row in rows if not (len(row) > 1 and row[1] in users)]
        if len(keep) == len(rows):
            return
        buf = io.StringIO()
        csv.writer(buf, quoting=csv.QUOTE_MINIMAL, lineterminator="\n").writerows(keep)
        tmp = p.with_name(p.name + ".tmp")
        wfd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(wfd, "w") as w:
            w.write(buf.getvalue())
            w.flush()
            os.fsync(w.fileno())
        os.replace(tmp, p)


class TokenAuthenticator:
    """Maps a bearer token to a user; re-reads tokens.csv when its mtime or size changes."""

    def __init__(self, data_dir: Path) -> None:
        self._path = tokens_path(data_dir)
        self._data_dir = data_dir
        self._stamp: tuple[float, int] | None = None
        self._tokens: dict[str, UserInfo] = {}
        self._reload()

    def _reload(self) -> None:
        try:
            st = self._path.stat()
        except FileNotFoundError:
            self._tokens, self._stamp = {}, None
            return
        stamp = (st.st_mtime, st.st_size)
        if stamp != self._stamp:
            self._tokens = read_tokens(self._data_dir)
            self._stamp = stamp

    def authenticate(self, token: str) -> UserInfo | None:
        user = self._tokens.get(token)
        if user is None:
            self._reload()
            user = self._tokens.get(token)
        return user

