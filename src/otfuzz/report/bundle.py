"""Signed evidence bundles: a run folder packed so an assessor can prove nothing changed.

A bundle is a plain (uncompressed) tar that any tool can list and unpack:

    otfuzz-bundle/files/...          every regular file of the run folder (store, reports,
                                     configuration) and any extra files, byte for byte
    otfuzz-bundle/manifest.json      path, size and SHA-256 of each file, tool version,
                                     creation time and the signer's Ed25519 public key
    otfuzz-bundle/manifest.sig       base64 Ed25519 signature over manifest.json's exact bytes

It is uncompressed on purpose: a changed byte then changes one file's hash and verification
names that file, instead of breaking a compressed stream for everything after it. Files are
hashed while they are written into the bundle, so the manifest describes exactly the bytes
stored even if the run folder is still being written to.

Verification checks the structure (a truncated or damaged archive is an error), the signature,
and every file against the manifest, and names each file altered, added or removed. The key
embedded in the bundle only proves the bundle is consistent with itself; an auditor passes the
expected public key (`--key`) or its fingerprint to prove who signed it.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import io
import json
import os
import shutil
import tarfile
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import IO, Any

from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from otfuzz import __version__
from otfuzz.errors import OtfuzzError

FORMAT = "otfuzz-evidence-bundle/1"
ROOT = "otfuzz-bundle"
FILES = f"{ROOT}/files/"
MANIFEST = f"{ROOT}/manifest.json"
SIGNATURE = f"{ROOT}/manifest.sig"
EXTRA = "extra/"  # where --include files go, under FILES
_BLOCK = 512
_CHUNK = 1 << 20


# -- keys --------------------------------------------------------------------------------------


def fingerprint(public_key: Ed25519PublicKey) -> str:
    """'sha256:' + hex SHA-256 of the raw 32-byte public key: what an auditor compares."""
    raw = public_key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return "sha256:" + hashlib.sha256(raw).hexdigest()


def generate_keypair(prefix: Path, *, force: bool = False) -> tuple[Path, Path, str]:
    """Write PREFIX.key (PKCS#8 PEM, mode 0600) and PREFIX.pub (PEM); return both and the fingerprint."""
    private_path, public_path = Path(f"{prefix}.key"), Path(f"{prefix}.pub")
    if not force:
        for path in (private_path, public_path):
            if path.exists():
                raise OtfuzzError(f"{path} already exists (use --force to replace it, or another --out)")
    key = Ed25519PrivateKey.generate()
    private_pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                    serialization.NoEncryption())
    public_pem = key.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    try:
        private_path.parent.mkdir(parents=True, exist_ok=True)
        private_path.unlink(missing_ok=True)
        # Created 0600 from the first byte: never readable by others, not even briefly.
        fd = os.open(private_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as handle:
            handle.write(private_pem)
        public_path.write_bytes(public_pem)
    except OSError as exc:
        raise OtfuzzError(f"cannot write key files {private_path}, {public_path}: {exc.strerror}") from None
    return private_path, public_path, fingerprint(key.public_key())


def load_private_key(path: Path) -> Ed25519PrivateKey:
    data = _read_key_file(path, "private key")
    try:
        key = serialization.load_pem_private_key(data, password=None)
    except TypeError:
        raise OtfuzzError(f"{path} is a passphrase-protected key; otfuzz needs an unencrypted key (otfuzz keygen)") from None
    except (ValueError, UnsupportedAlgorithm):
        raise OtfuzzError(f"{path} is not a PEM private key (make one with: otfuzz keygen)") from None
    if not isinstance(key, Ed25519PrivateKey):
        raise OtfuzzError(f"{path} is not an Ed25519 private key (make one with: otfuzz keygen)")
    return key


def load_public_key(path: Path) -> Ed25519PublicKey:
    data = _read_key_file(path, "public key")
    try:
        key = serialization.load_pem_public_key(data)
    except (ValueError, UnsupportedAlgorithm):
        raise OtfuzzError(f"{path} is not a PEM public key (the .pub file written by otfuzz keygen)") from None
    if not isinstance(key, Ed25519PublicKey):
        raise OtfuzzError(f"{path} is not an Ed25519 public key")
    return key


def _read_key_file(path: Path, what: str) -> bytes:
    try:
        return Path(path).read_bytes()
    except OSError as exc:
        raise OtfuzzError(f"cannot read {what} {path}: {exc.strerror}") from None


# -- packing -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class BundleInfo:
    path: Path
    files: int
    bytes: int
    fingerprint: str


class _HashingReader:
    """A file wrapper that hashes exactly the bytes tarfile copies into the archive."""

    def __init__(self, handle: IO[bytes]) -> None:
        self.handle = handle
        self.digest = hashlib.sha256()

    def read(self, size: int = -1) -> bytes:
        chunk = self.handle.read(size)
        self.digest.update(chunk)
        return chunk


def collect_files(run_dir: Path, extra: Sequence[Path] = (), exclude: Iterable[Path] = ()) -> list[tuple[str, Path]]:
    """(name in bundle, path) for every regular file of the run folder plus the extras."""
    if not run_dir.is_dir():
        raise OtfuzzError(f"run folder {run_dir} does not exist")
    skipped = {p.resolve() for p in exclude}
    entries: list[tuple[str, Path]] = []
    for path in sorted(run_dir.rglob("*")):
        if path.is_symlink():
            raise OtfuzzError(f"{path} is a symbolic link; an evidence bundle holds only the run's own files")
        if path.is_file() and path.resolve() not in skipped:
            entries.append((path.relative_to(run_dir).as_posix(), path))
    names = {name for name, _ in entries}
    for path in extra:
        if not Path(path).is_file():
            raise OtfuzzError(f"cannot include {path}: not a file")
        name = EXTRA + Path(path).name
        if name in names:
            raise OtfuzzError(f"two included files are both named {Path(path).name}")
        names.add(name)
        entries.append((name, Path(path)))
    return entries


def create_bundle(run_dir: Path, private_key: Path, out: Path, *, extra: Sequence[Path] = ()) -> BundleInfo:
    """Pack `run_dir` (and `extra` files) into a signed bundle at `out`."""
    key = load_private_key(private_key)
    run_dir = Path(run_dir)
    entries = collect_files(run_dir, extra, exclude=[out, Path(f"{out}.tmp")])
    tmp = Path(f"{out}.tmp")
    listed = []
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        with tarfile.open(tmp, "w", format=tarfile.PAX_FORMAT) as tar:
            for name, path in entries:
                with path.open("rb") as handle:
                    size = os.fstat(handle.fileno()).st_size
                    info = _member(FILES + name, size, int(path.stat().st_mtime))
                    reader = _HashingReader(handle)
                    tar.addfile(info, reader)  # type: ignore[arg-type]
                listed.append({"path": name, "size": size, "sha256": reader.digest.hexdigest()})
            manifest = _manifest_bytes(run_dir, listed, key.public_key())
            signature = base64.b64encode(key.sign(manifest)) + b"\n"
            now = int(datetime.now(timezone.utc).timestamp())
            tar.addfile(_member(MANIFEST, len(manifest), now), io.BytesIO(manifest))
            tar.addfile(_member(SIGNATURE, len(signature), now), io.BytesIO(signature))
        os.replace(tmp, out)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise OtfuzzError(f"cannot write bundle {out}: {exc.strerror or exc}") from None
    return BundleInfo(out, len(listed), sum(item["size"] for item in listed), fingerprint(key.public_key()))


def _member(name: str, size: int, mtime: int) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.size, info.mtime, info.mode = size, mtime, 0o644
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    return info


def _manifest_bytes(run_dir: Path, files: list[dict[str, Any]], public_key: Ed25519PublicKey) -> bytes:
    raw = public_key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    manifest = {
        "format": FORMAT,
        "created_at": datetime.now(timezone.utc).replace(microsecond=0).isoformat(),
        "tool": {"name": "otfuzz", "version": __version__},
        "run_folder": run_dir.resolve().name,
        "signer": {"algorithm": "Ed25519", "public_key": base64.b64encode(raw).decode(), "fingerprint": fingerprint(public_key)},
        "files": files,
    }
    return (json.dumps(manifest, indent=2, sort_keys=True) + "\n").encode()


# -- verifying ---------------------------------------------------------------------------------


@dataclass
class Verification:
    """What `verify_bundle` found. `ok` only if the signature and every file check out."""

    bundle: Path
    fingerprint: str | None = None
    key_source: str = "bundle"  # "bundle" (self-asserted) or "expected" (--key / --fingerprint)
    signature_valid: bool = False
    checked: int = 0
    altered: list[str] = field(default_factory=list)
    added: list[str] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.signature_valid and not (self.altered or self.added or self.removed or self.problems)

    def lines(self) -> list[str]:
        """The verdict for a human: one line per finding, the overall result last."""
        out = [f"bundle: {self.bundle}"]
        if self.fingerprint:
            how = ("matches the expected key" if self.key_source == "expected" else
                   "key taken from the bundle itself: compare this fingerprint with the signer's, or pass --key")
            out.append(f"signer: Ed25519 {self.fingerprint} ({how})")
        out += [f"PROBLEM: {p}" for p in self.problems]
        out += [f"ALTERED: {name}" for name in self.altered]
        out += [f"ADDED: {name}" for name in self.added]
        out += [f"REMOVED: {name}" for name in self.removed]
        if self.ok:
            out.append(f"OK: signature valid, {self.checked} files match the manifest")
        else:
            count = len(self.problems) + len(self.altered) + len(self.added) + len(self.removed)
            out.append(f"FAILED: {count} problem{'s' if count != 1 else ''} found")
        return out


def verify_bundle(bundle: Path, *, public_key: Path | None = None, expected_fingerprint: str | None = None) -> Verification:
    """Check a bundle's structure, signature and every file; raise OtfuzzError if it is unreadable."""
    bundle = Path(bundle)
    result = Verification(bundle)
    members = _read_members(bundle, result)
    manifest_bytes = members.pop(MANIFEST, None)
    signature_text = members.pop(SIGNATURE, None)
    if manifest_bytes is None or signature_text is None:
        missing = " and ".join(n for n, v in ((MANIFEST, manifest_bytes), (SIGNATURE, signature_text)) if v is None)
        raise OtfuzzError(f"{bundle} has no {missing}: not an otfuzz evidence bundle, or truncated")
    manifest = _parse_manifest(manifest_bytes, result)
    embedded = _embedded_key(manifest, result)
    signature = _decode_signature(signature_text, result)
    if public_key is not None:
        key: Ed25519PublicKey | None = load_public_key(public_key)
        result.key_source = "expected"
        wanted = fingerprint(key)  # type: ignore[arg-type]
    else:
        key = embedded
        wanted = _normal_fingerprint(expected_fingerprint) if expected_fingerprint else None
        result.key_source = "expected" if wanted else "bundle"
    result.fingerprint = fingerprint(key) if key is not None else None
    if wanted is not None and embedded is not None and fingerprint(embedded) != wanted \
            and _verifies(embedded, manifest_bytes, signature):
        # Intact, but signed by someone else: the wrong key, not tampering.
        raise OtfuzzError(f"{bundle} is signed by key {fingerprint(embedded)}, not by the expected key {wanted}")
    if key is not None and signature is not None:
        if wanted is not None and result.fingerprint != wanted:
            result.altered.append(f"{MANIFEST} (signer key altered)")
        elif _verifies(key, manifest_bytes, signature):
            result.signature_valid = True
        else:
            result.altered.append(f"{MANIFEST} or {SIGNATURE} (the signature does not verify)")
    _compare_files(manifest, members, result)
    return result


def _read_members(bundle: Path, result: Verification) -> dict[str, bytes | str]:
    """Hash every member: file contents as SHA-256 hex, manifest and signature as bytes."""
    found, last, end = _scan(bundle, result, skip_damage=False)
    with bundle.open("rb") as handle:
        handle.seek(end)
        tail = handle.read()
    if not tail.strip(b"\0"):
        if len(tail) < 2 * _BLOCK:
            raise OtfuzzError(f"{bundle} is truncated: the archive ends without its end marker (after {last})")
        return found
    # tarfile stops quietly at a header it cannot read. Say so, then read on past the damage
    # so that every member after it is still checked.
    result.problems.append(f"archive structure altered after {last}: unreadable header at byte {end}")
    retry = Verification(bundle)
    found, _, _ = _scan(bundle, retry, skip_damage=True)
    result.added += retry.added
    return found


def _scan(bundle: Path, result: Verification, *, skip_damage: bool) -> tuple[dict[str, bytes | str], str, int]:
    try:
        tar = tarfile.open(bundle, "r:", ignore_zeros=skip_damage)
    except FileNotFoundError:
        raise OtfuzzError(f"bundle {bundle} does not exist") from None
    except (tarfile.TarError, OSError, EOFError) as exc:
        raise OtfuzzError(f"{bundle} is not an otfuzz evidence bundle or is truncated ({exc})") from None
    found: dict[str, bytes | str] = {}
    last = "the start"
    with tar:
        try:
            for member in tar:
                last = member.name
                if member.name in found:
                    result.problems.append(f"{member.name} appears twice in the bundle")
                if not member.isfile():
                    result.added.append(f"{member.name} (not a regular file)")
                    continue
                handle = tar.extractfile(member)
                assert handle is not None  # regular files always have data
                if member.name in (MANIFEST, SIGNATURE):
                    found[member.name] = handle.read()
                else:
                    digest = hashlib.sha256()
                    while chunk := handle.read(_CHUNK):
                        digest.update(chunk)
                    found[member.name] = digest.hexdigest()
            end = tar.offset
        except (tarfile.TarError, EOFError, OSError) as exc:
            raise OtfuzzError(f"{bundle} is truncated or damaged after {last} ({exc})") from None
    return found, last, end


def _parse_manifest(data: bytes | str, result: Verification) -> dict[str, Any]:
    try:
        manifest = json.loads(data)
        if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
            raise ValueError("unexpected format")
        return manifest
    except (ValueError, UnicodeDecodeError):
        result.altered.append(f"{MANIFEST} (no longer a valid manifest)")
        return {}


def _embedded_key(manifest: dict[str, Any], result: Verification) -> Ed25519PublicKey | None:
    if not manifest:
        return None
    try:
        raw = base64.b64decode(manifest["signer"]["public_key"], validate=True)
        return Ed25519PublicKey.from_public_bytes(raw)
    except (KeyError, TypeError, ValueError, binascii.Error):
        result.altered.append(f"{MANIFEST} (signer key unreadable)")
        return None


def _decode_signature(text: bytes | str, result: Verification) -> bytes | None:
    try:
        signature = base64.b64decode(bytes(text).strip(), validate=True)  # type: ignore[arg-type]
    except (binascii.Error, ValueError):
        signature = b""
    if len(signature) != 64:
        result.altered.append(f"{SIGNATURE} (not an Ed25519 signature)")
        return None
    return signature


def _verifies(key: Ed25519PublicKey, manifest: bytes | str, signature: bytes | None) -> bool:
    if signature is None:
        return False
    try:
        key.verify(signature, bytes(manifest))  # type: ignore[arg-type]
        return True
    except InvalidSignature:
        return False


def _normal_fingerprint(text: str) -> str:
    wanted = text.strip().lower()
    return wanted if wanted.startswith("sha256:") else "sha256:" + wanted


def _compare_files(manifest: dict[str, Any], members: dict[str, bytes | str], result: Verification) -> None:
    listed = {}
    for item in manifest.get("files") or []:
        if isinstance(item, dict) and isinstance(item.get("path"), str):
            listed[FILES + item["path"]] = str(item.get("sha256", ""))
    for name, digest in sorted(members.items()):
        if name not in listed:
            result.added.append(name)
        elif digest != listed[name]:
            result.altered.append(name)
        else:
            result.checked += 1
    result.removed += sorted(name for name in listed if name not in members)


# -- unpacking ---------------------------------------------------------------------------------


def extract_bundle(bundle: Path, dest: Path) -> int:
    """Unpack the run folder of a bundle into `dest` (created, must not exist); the number of files.

    Verify first: this only refuses what could write outside `dest` (absolute names, '..', links,
    devices) and what a bundle never holds, so an unpacked run folder is the run's own files.
    """
    import posixpath

    bundle, dest = Path(bundle), Path(dest)
    if dest.exists():
        raise OtfuzzError(f"cannot unpack {bundle} into {dest}: it already exists")
    tmp = dest.with_name(dest.name + ".unpacking")
    shutil.rmtree(tmp, ignore_errors=True)
    count = 0
    try:
        with tarfile.open(bundle, "r:") as tar:
            for member in tar:
                if member.name in (MANIFEST, SIGNATURE):
                    continue
                name = member.name[len(FILES):] if member.name.startswith(FILES) else ""
                parts = name.split("/")
                if not member.isfile() or not name or posixpath.isabs(name) or ".." in parts or "" in parts:
                    raise OtfuzzError(f"{bundle}: member {member.name!r} is not a file of the run folder; not unpacked")
                if name.startswith(EXTRA):
                    continue  # files included beside the run are not part of the run folder
                target = tmp.joinpath(*parts)
                target.parent.mkdir(parents=True, exist_ok=True)
                handle = tar.extractfile(member)
                assert handle is not None
                with target.open("wb") as out:
                    while chunk := handle.read(_CHUNK):
                        out.write(chunk)
                count += 1
        os.replace(tmp, dest)
    except (tarfile.TarError, OSError, EOFError) as exc:
        shutil.rmtree(tmp, ignore_errors=True)
        raise OtfuzzError(f"cannot unpack {bundle} into {dest}: {exc}") from None
    except OtfuzzError:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return count

