"""Bearer tokens in DIR/tokens.csv, in upstream's static token file format.

Each line is `token,user,uid,"group1,group2"` (kube-apiserver --token-auth-file). The admin token
(user `admin`, group system:masters) and the apiserver's own token (user system:apiserver, used
when it calls kubelets) are written at first start; `nodeagent kubeconfig --user node NAME`
appends system:node:NAME in group system:nodes. The server reloads the file when it changes, so
a node token minted while the server runs works at once.
"""

from __future__ import annotations

import csv
import fcntl
import io
import os
import secrets
from dataclasses import dataclass, field
from pathlib import Path

ADMIN_USER = "admin"
APISERVER_USER = "system:apiserver"
MASTERS_GROUP = "system:masters"
NODES_GROUP = "system:nodes"
NODE_USER_PREFIX = "system:node:"


@dataclass(frozen=True)
class UserInfo:
    name: str
    uid: str
    groups: tuple[str, ...] = field(default=())

    @property
    def is_admin(self) -> bool:
        return MASTERS_GROUP in self.groups

    @property
    def node_name(self) -> str | None:
        if NODES_GROUP in self.groups and self.name.startswith(NODE_USER_PREFIX):
            return self.name[len(NODE_USER_PREFIX):]
        return None

    def to_json(self) -> dict[str, object]:
        return {"username": self.name, "uid": self.uid,
                "groups": [*self.groups, "system:authenticated"]}


def tokens_path(data_dir: Path) -> Path:
    return data_dir / "tokens.csv"


def _parse(text: str) -> dict[str, UserInfo]:
    out: dict[str, UserInfo] = {}
    for row in csv.reader(io.StringIO(text)):
        if len(row) < 2 or not row[0] or row[0].startswith("#"):
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
    ensure_token(data_dir, APISERVER_USER, (MASTERS_GROUP,))


def node_user(node: str) -> str:
    return NODE_USER_PREFIX + node


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

    def token_of(self, user: str) -> str | None:
        for token, info in self._tokens.items():
            if info.name == user:
                return token
        return None
