"""The transaction signer: a key from an environment variable or a keystore file.

The key never leaves this object: not in logs, not in reprs, not in answers.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from eth_account import Account
from eth_account.signers.local import LocalAccount

from offload import ConfigError


class Signer:
    """Signs transactions for one account."""

    def __init__(self, account: LocalAccount) -> None:
        self._account = account

    @property
    def address(self) -> str:
        return self._account.address

    def sign(self, transaction: dict[str, Any]) -> bytes:
        """The raw signed transaction."""
        return bytes(self._account.sign_transaction(transaction).raw_transaction)

    def __repr__(self) -> str:
        return f"Signer({self.address})"


def _text(options: Mapping[str, Any], key: str, where: str) -> str:
    """A string option, or one line saying it is not one."""
    value = options[key]
    if not isinstance(value, str):
        raise ConfigError(f"{where} {key} must be a string, got {value!r}")
    return value


def load_signer(options: Mapping[str, Any], where: str, base_dir: Path) -> Signer | None:
    """The configured signer, or None when no key is configured (read-only gateway)."""
    key_env = _text(options, "private_key_env", where)
    keystore = _text(options, "keystore", where)
    if keystore:
        path = Path(keystore) if Path(keystore).is_absolute() else base_dir / keystore
        password_env = _text(options, "keystore_password_env", where)
        password = os.environ.get(password_env)
        if password is None:
            raise ConfigError(f"{where} keystore {keystore!r} needs its password in ${password_env}")
        try:
            key = Account.decrypt(json.loads(path.read_text(encoding="utf-8")), password)
        except (OSError, ValueError):
            # Never echo the password or the file's content.
            raise ConfigError(
                f"{where} keystore {keystore!r} cannot be read or decrypted with ${password_env}"
            ) from None
        return Signer(Account.from_key(key))
    raw_key = os.environ.get(key_env) if key_env else None
    if not raw_key:
        return None
    try:
        return Signer(Account.from_key(raw_key.strip()))
    except (ValueError, TypeError):
        raise ConfigError(f"{where} ${key_env} does not hold a valid private key (32 bytes as hex)") from None
