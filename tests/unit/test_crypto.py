"""AES-256-GCM envelope encryption: nonces, tampering, rows swapped, KEK rotation (also interrupted),
data-key rotation with resumable re-encryption, and no plaintext in the database file."""

from __future__ import annotations

import base64
import os
from pathlib import Path

import pytest
from sqlalchemy import Column, Integer, LargeBinary, MetaData, Table, insert, select

from moltbot.storage.crypto import CryptoError, DecryptionError, Vault, kek_id
from moltbot.storage.database import open_database

CANARY = "canary-5d1e-plaintext-must-not-be-stored"


def vault(tmp_path: Path) -> Vault:
    return Vault(open_database(tmp_path / "db.sqlite"), tmp_path / "secrets" / "kek")


def test_round_trip_and_kek_file_is_private(tmp_path: Path) -> None:
    v = vault(tmp_path)
    blob = v.encrypt_text(CANARY, "messages", "content", 42)
    assert v.decrypt_text(blob, "messages", "content", 42) == CANARY
    assert CANARY.encode() not in blob
    assert oct((tmp_path / "secrets" / "kek").stat().st_mode & 0o777) == "0o600"
    assert len(base64.b64decode((tmp_path / "secrets" / "kek").read_text())) == 32


def test_nonces_never_repeat_over_100k_encryptions(tmp_path: Path) -> None:
    v = vault(tmp_path)
    nonces = {v.encrypt(b"x", "t", "c", i)[9:21] for i in range(100_000)}
    assert len(nonces) == 100_000


def test_any_flipped_bit_is_refused(tmp_path: Path) -> None:
    v = vault(tmp_path)
    blob = v.encrypt(b"hello world", "t", "c", 1)
    for position in (0, 3, 12, 25, len(blob) - 1):  # version, key id, nonce, ciphertext, tag
        tampered = bytearray(blob)
        tampered[position] ^= 0x01
        with pytest.raises(DecryptionError):
            v.decrypt(bytes(tampered), "t", "c", 1)
    with pytest.raises(DecryptionError, match="not a Moltbot ciphertext"):
        v.decrypt(blob[:10], "t", "c", 1)


def test_a_ciphertext_moved_to_another_row_column_or_table_is_refused(tmp_path: Path) -> None:
    v = vault(tmp_path)
    blob = v.encrypt(b"secret", "messages", "content", 7)
    for place in (("messages", "content", 8), ("messages", "title", 7), ("sessions", "content", 7)):
        with pytest.raises(DecryptionError, match="integrity check"):
            v.decrypt(blob, *place)


def test_kek_rotation_rewraps_data_keys_and_keeps_data_readable(tmp_path: Path) -> None:
    v = vault(tmp_path)
    blob = v.encrypt(b"kept", "t", "c", 1)
    old_file = (tmp_path / "secrets" / "kek").read_text()
    new_id = v.rotate_kek()
    assert (tmp_path / "secrets" / "kek").read_text() != old_file
    assert new_id == v.kek_id != kek_id(base64.b64decode(old_file))
    reopened = vault(tmp_path)
    assert reopened.decrypt(blob, "t", "c", 1) == b"kept"


def test_an_interrupted_kek_rotation_recovers_either_way(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    v = vault(tmp_path)
    blob = v.encrypt(b"survives", "t", "c", 1)
    kek = tmp_path / "secrets" / "kek"
    # Crash after the new KEK was written and the data keys re-wrapped, before the rename.
    real_replace = os.replace

    def crash_on_kek(src: str | os.PathLike[str], dst: str | os.PathLike[str]) -> None:
        if Path(dst) == kek and str(src).endswith(".new"):
            raise OSError("simulated crash")
        real_replace(src, dst)

    monkeypatch.setattr("moltbot.storage.crypto.os.replace", crash_on_kek)
    with pytest.raises(OSError, match="simulated crash"):
        v.rotate_kek()
    monkeypatch.undo()
    assert (tmp_path / "secrets" / "kek.new").exists()
    assert vault(tmp_path).decrypt(blob, "t", "c", 1) == b"survives"  # finishes the rotation
    assert not (tmp_path / "secrets" / "kek.new").exists()
    # Crash after the new KEK was written, before the data keys were re-wrapped: the old one stays.
    (tmp_path / "secrets" / "kek.new").write_text(base64.b64encode(os.urandom(32)).decode())
    assert vault(tmp_path).decrypt(blob, "t", "c", 1) == b"survives"
    assert not (tmp_path / "secrets" / "kek.new").exists()


def test_a_missing_or_wrong_kek_is_a_clear_error(tmp_path: Path) -> None:
    vault(tmp_path)
    kek = tmp_path / "secrets" / "kek"
    kek.write_text(base64.b64encode(os.urandom(32)).decode())
    with pytest.raises(CryptoError, match="does not open with this key-encryption key"):
        vault(tmp_path)
    kek.unlink()
    with pytest.raises(CryptoError, match="is missing"):
        vault(tmp_path)


def test_data_key_rotation_reencrypts_in_resumable_batches(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    engine = open_database(tmp_path / "db.sqlite")
    table = Table("notes", MetaData(), Column("id", Integer, primary_key=True), Column("body", LargeBinary))
    table.create(engine)
    v = Vault(engine, tmp_path / "kek")
    with engine.begin() as conn:
        for i in range(1, 1201):
            conn.execute(insert(table).values(id=i, body=v.encrypt_text(f"{CANARY} {i}", "notes", "body", i)))
    old = v.active_key_id
    new = v.new_data_key()
    assert new != old
    # Interrupted after the first batch...
    calls = {"n": 0}
    real_encrypt = v.encrypt

    def failing(plaintext: bytes, table_name: str, column: str, row: str | int) -> bytes:
        calls["n"] += 1
        if calls["n"] > 500:
            raise RuntimeError("interrupted")
        return real_encrypt(plaintext, table_name, column, row)

    monkeypatch.setattr(v, "encrypt", failing)
    with pytest.raises(RuntimeError):
        v.reencrypt(table, "id", ["body"], batch=500)
    monkeypatch.undo()
    # ...and resumed: only the rest is redone.
    assert v.reencrypt(table, "id", ["body"], batch=500) == 700
    assert v.reencrypt(table, "id", ["body"], batch=500) == 0
    with engine.connect() as conn:
        rows = conn.execute(select(table)).all()
    assert all(Vault.key_id_of(body) == new for _, body in rows)
    assert [v.decrypt_text(body, "notes", "body", i) for i, body in rows[:2]] == [f"{CANARY} 1", f"{CANARY} 2"]
    engine.dispose()
    for name in ("db.sqlite", "db.sqlite-wal"):
        path = tmp_path / name
        if path.exists():
            assert CANARY.encode() not in path.read_bytes()
