"""Folder names from config values: the token that makes two runs started in the same second
differ, and `safe_name`, which turns any text into one folder name that cannot leave its parent.
Both are OmegaConf resolvers (`${mdn.token:}`, `${mdn.safe_name:...}`) used by conf/config.yaml."""

from __future__ import annotations

import hashlib
import secrets
from typing import Any

from omegaconf import OmegaConf

_PROCESS_TOKEN = secrets.token_hex(3)  # one per process: two runs started in the same second differ
MAX_NAME_BYTES = 200  # file systems allow 255 bytes per name


def safe_name(text: Any, fallback: str = "job") -> str:
    """`text` as one folder name that cannot leave its parent: '/', '\\', '%' and control
    characters are %-encoded (so distinct texts stay distinct), '.' and '..' are escaped, and a
    name too long for the file system is cut and ends in a hash of the whole."""
    text = str(text)
    if not text:
        return fallback
    out = "".join(f"%{ord(c):02X}" if c in "%/\\" or ord(c) < 32 or ord(c) == 127 else c for c in text)
    if out in (".", ".."):
        out = out.replace(".", "%2E")
    if len(out.encode()) > MAX_NAME_BYTES:
        digest = hashlib.sha256(text.encode()).hexdigest()[:12]
        out = out.encode()[: MAX_NAME_BYTES - 13].decode("utf-8", "ignore") + "~" + digest
    return out


OmegaConf.register_new_resolver("mdn.token", lambda: _PROCESS_TOKEN, use_cache=True, replace=True)
OmegaConf.register_new_resolver(
    "mdn.safe_name", lambda text, fallback="job": safe_name(text, str(fallback)), replace=True
)
