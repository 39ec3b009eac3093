"""Encryption at rest: AES-256-GCM with envelope keys.

- The key-encryption key (KEK, 256 bits) lives in a file created 0600 on first start, in the data
  directory or wherever the operator points `MOLTBOT_KEK_FILE` (outside it, if they wish).
- Data keys (DEKs, 256 bits) are stored in the database wrapped by the KEK (AES-256-GCM, the key's id as
  associated data). Rotating the KEK re-wraps them and touches no data. One data key is active: new
  ciphertexts use it; older ones keep theirs until re-encrypted.
- A ciphertext is `version (1) | data key id (8) | nonce (12, random) | AES-GCM(ciphertext + tag)`, with
  associated data binding it to its place: table, column and row. A ciphertext copied to another row or
  column, or altered by one bit, does not decrypt: DecryptionError, never garbage.

KEK rotation survives a crash at any point: the new KEK is written to `<kek>.new` before the data keys
are re-wrapped in one transaction, then renamed over the old one; at start, a leftover `.new` file is
used when the data keys answer to it.
"""

from __future__ import annotations

import base64
import hashlib
import logging
import os
import secrets
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from sqlalchemy import Engine, Table, insert, select, update

from moltbot.storage.errors import StorageError
from moltbot.storage.files import write_atomic
from moltbot.storage.schema import data_keys

log = logging.getLogger(__name__)

_VERSION = 1
_KEY_ID_BYTES = 8
_NONCE_BYTES = 12
_HEADER = 1 + _KEY_ID_BYTES + _NONCE_BYTES


class CryptoError(StorageError):
    """Encryption cannot work: a missing or wrong key-encryption key, an unknown data key."""


class DecryptionError(CryptoError):
    """Stored data failed its integrity check: tampered, moved to another row, or another key."""


def _read_kek(path: Path) -> bytes:
    try:
        key = base64.b64decode(path.read_text().strip(), validate=True)
    except (OSError, ValueError) as exc:
        raise CryptoError(f"the key-encryption key {path} cannot be read: {exc}") from None
    if len(key) != 32:
        raise CryptoError(f"the key-encryption key {path} is not 256 bits")
    return key


def kek_id(kek: bytes) -> str:
    return hashlib.sha256(b"moltbot-kek-id" + kek).hexdigest()[:16]


def aad(table: str, column: str, row: str | int) -> bytes:
    """The associated data that ties a ciphertext to one place."""
    return f"moltbot/v1\x00{table}\x00{column}\x00{row}".encode()


@dataclass(slots=True, frozen=True)
class DataKey:
    id: str  # 16 hex characters
    key: bytes


class Vault:
    """Data keys unwrapped in memory, and encryption with the active one."""

    def __init__(self, engine: Engine, kek_file: Path) -> None:
        self._engine = engine
        self._kek_file = kek_file
        self._lock = threading.Lock()
        self._kek = self._load_kek()
        self._keys: dict[str, DataKey] = {}
        self._active: DataKey | None = None
        self._load_data_keys()

    # -- the key-encryption key ----------------------------------------------------------------

    def _load_kek(self) -> bytes:
        path, pending = self._kek_file, self._kek_file.with_name(self._kek_file.name + ".new")
        if not path.exists() and not pending.exists():
            if self._has_data_keys():
                raise CryptoError(
                    f"the key-encryption key {path} is missing, and the database holds data keys wrapped by it"
                )
            write_atomic(path, base64.b64encode(secrets.token_bytes(32)) + b"\n")
            log.info("created a key-encryption key: %s", path)
        current = _read_kek(path) if path.exists() else None
        if pending.exists():  # a rotation was interrupted: which key do the data keys answer to?
            new = _read_kek(pending)
            if self._wrapped_under(new) or current is None:
                os.replace(pending, path)
                log.info("finished an interrupted key-encryption key rotation")
                return new
            pending.unlink()
        assert current is not None  # noqa: S101 - either file exists here
        return current

    def _has_data_keys(self) -> bool:
        with self._engine.connect() as conn:
            return conn.execute(select(data_keys.c.id).limit(1)).first() is not None

    def _wrapped_under(self, kek: bytes) -> bool:
        with self._engine.connect() as conn:
            row = conn.execute(select(data_keys.c.kek_id).limit(1)).first()
        return row is not None and row[0] == kek_id(kek)

    @property
    def kek_id(self) -> str:
        return kek_id(self._kek)

    def rotate_kek(self) -> str:
        """A new key-encryption key; every data key is re-wrapped, no data is re-encrypted. Returns its id."""
        with self._lock:
            new = secrets.token_bytes(32)
            pending = self._kek_file.with_name(self._kek_file.name + ".new")
            write_atomic(pending, base64.b64encode(new) + b"\n")
            with self._engine.begin() as conn:
                for row in conn.execute(select(data_keys)).mappings().all():
                    key = self._unwrap(row["id"], row["wrapped"], self._kek)
                    conn.execute(
                        update(data_keys)
                        .where(data_keys.c.id == row["id"])
                        .values(wrapped=self._wrap(row["id"], key, new), kek_id=kek_id(new))
                    )
            os.replace(pending, self._kek_file)
            self._kek = new
            return kek_id(new)

    # -- data keys -------------------------------------------------------------------------------

    @staticmethod
    def _wrap(key_id: str, key: bytes, kek: bytes) -> bytes:
        nonce = secrets.token_bytes(_NONCE_BYTES)
        return nonce + AESGCM(kek).encrypt(nonce, key, b"moltbot-dek\x00" + key_id.encode())

    @staticmethod
    def _unwrap(key_id: str, wrapped: bytes, kek: bytes) -> bytes:
        try:
            return AESGCM(kek).decrypt(
                wrapped[:_NONCE_BYTES], wrapped[_NONCE_BYTES:], b"moltbot-dek\x00" + key_id.encode()
            )
        except InvalidTag:
            raise CryptoError(
                f"data key {key_id} does not open with this key-encryption key (a wrong or replaced KEK file?)"
            ) from None

    def _load_data_keys(self) -> None:
        with self._engine.connect() as conn:
            rows = conn.execute(select(data_keys).order_by(data_keys.c.created_at)).mappings().all()
        for row in rows:
            key = DataKey(row["id"], self._unwrap(row["id"], row["wrapped"], self._kek))
            self._keys[key.id] = key
            if row["active"]:
                self._active = key
        if self._active is None:
            self.new_data_key()

    def _reload(self, key_id: str) -> DataKey | None:
        """A data key made by another process since this one started (`moltbot keys rotate-data-key`
        while the server runs, perhaps after `rotate-kek`): read the KEK file and the data keys again."""
        with self._lock:
            try:
                self._kek = self._load_kek()
                self._load_data_keys()
            except CryptoError:
                log.exception("reloading the data keys failed")
                return None
            return self._keys.get(key_id)

    def new_data_key(self) -> str:
        """Make a new data key the active one (older ones stay, to decrypt what they encrypted)."""
        with self._lock:
            key = DataKey(secrets.token_hex(_KEY_ID_BYTES), AESGCM.generate_key(bit_length=256))
            with self._engine.begin() as conn:
                conn.execute(update(data_keys).values(active=False))
                conn.execute(
                    insert(data_keys).values(
                        id=key.id,
                        wrapped=self._wrap(key.id, key.key, self._kek),
                        kek_id=self.kek_id,
                        created_at=time.time(),
                        active=True,
                    )
                )
            self._keys[key.id] = key
            self._active = key
            return key.id

    @property
    def active_key_id(self) -> str:
        assert self._active is not None  # noqa: S101 - made at construction
        return self._active.id

    # -- data ------------------------------------------------------------------------------------

    def encrypt(self, plaintext: bytes, table: str, column: str, row: str | int) -> bytes:
        key = self._active
        assert key is not None  # noqa: S101 - made at construction
        nonce = secrets.token_bytes(_NONCE_BYTES)
        sealed = AESGCM(key.key).encrypt(nonce, plaintext, aad(table, column, row))
        return bytes([_VERSION]) + bytes.fromhex(key.id) + nonce + sealed

    def decrypt(self, blob: bytes, table: str, column: str, row: str | int) -> bytes:
        where = f"{table}.{column} of row {row}"
        if len(blob) < _HEADER + 16 or blob[0] != _VERSION:
            raise DecryptionError(f"stored data in {where} is not a Moltbot ciphertext")
        key_id = blob[1 : 1 + _KEY_ID_BYTES].hex()
        key = self._keys.get(key_id) or self._reload(key_id)
        if key is None:
            raise DecryptionError(f"stored data in {where} names an unknown data key")
        nonce = blob[1 + _KEY_ID_BYTES : _HEADER]
        try:
            return AESGCM(key.key).decrypt(nonce, blob[_HEADER:], aad(table, column, row))
        except InvalidTag:
            raise DecryptionError(f"stored data in {where} failed its integrity check") from None

    @staticmethod
    def key_id_of(blob: bytes) -> str:
        """The data key a ciphertext was made with (to find what a rotation must re-encrypt)."""
        return blob[1 : 1 + _KEY_ID_BYTES].hex()

    def reencrypt(self, table: Table, id_column: str, columns: Sequence[str], batch: int = 500) -> int:
        """Re-encrypt every value of `columns` not under the active data key, `batch` rows per
        transaction in id order (an interrupted run resumes: finished rows already use the active key).
        Returns how many values were re-encrypted."""
        done, last = 0, None
        active = self.active_key_id
        id_col = table.c[id_column]
        while True:
            query = select(id_col, *(table.c[c] for c in columns)).order_by(id_col).limit(batch)
            if last is not None:
                query = query.where(id_col > last)
            with self._engine.begin() as conn:
                rows = conn.execute(query).all()
                for row in rows:
                    row_id = row[0]
                    fresh = {
                        column: self.encrypt(
                            self.decrypt(value, table.name, column, row_id), table.name, column, row_id
                        )
                        for column, value in zip(columns, row[1:], strict=True)
                        if value is not None and self.key_id_of(value) != active
                    }
                    if fresh:
                        conn.execute(update(table).where(id_col == row_id).values(**fresh))
                        done += len(fresh)
            if len(rows) < batch:
                return done
            last = rows[-1][0]

    def encrypt_text(self, text: str, table: str, column: str, row: str | int) -> bytes:
        return self.encrypt(text.encode("utf-8"), table, column, row)

    def decrypt_text(self, blob: bytes, table: str, column: str, row: str | int) -> str:
        return self.decrypt(blob, table, column, row).decode("utf-8")
