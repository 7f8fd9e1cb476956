"""Signed evidence bundles: any altered, added or removed file is named; bad input is one line."""

from __future__ import annotations

import io
import os
import stat
import tarfile
from pathlib import Path

import pytest
from report_samples import hostile_results, write_run

from otfuzz.compliance.evidence import EvidenceOptions, build_evidence
from otfuzz.errors import OtfuzzError
from otfuzz.report.bundle import FILES, MANIFEST, SIGNATURE, create_bundle, generate_keypair, verify_bundle
from otfuzz.report.reports import write_reports

KINDS = ["evidence.sqlite", "reports/results.json", "reports/report.html", "reports/report.pdf", "reports/junit.xml",
         "reports/oscal-assessment-results.json", "reports/catalogue.yaml", "reports/mapping.yaml", "extra/campaign.yaml"]


@pytest.fixture(scope="module")
def keys(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    private, public, _ = generate_keypair(tmp_path_factory.mktemp("keys") / "signer")
    return private, public


@pytest.fixture(scope="module")
def bundle(tmp_path_factory: pytest.TempPathFactory, keys: tuple[Path, Path]) -> Path:
    """A run folder with a real store, reports in every format and an extra config file, bundled."""
    base = tmp_path_factory.mktemp("bundle")
    results = hostile_results()
    run = write_run(base / "run", results)
    write_reports(results, build_evidence(results, EvidenceOptions(component_type="embedded-device")),
                  ["json", "html", "pdf", "junit", "oscal"], run / "reports")
    config = base / "campaign.yaml"
    config.write_text("target: modbus://127.0.0.1:5020\nseed: 7\n")
    return create_bundle(run, keys[0], base / "run.bundle.tar", extra=[config]).path


def _copy(bundle: Path, tmp_path: Path) -> Path:
    copy = tmp_path / bundle.name
    copy.write_bytes(bundle.read_bytes())
    return copy


def _flip_byte_of(bundle: Path, member_name: str) -> None:
    with tarfile.open(bundle) as tar:
        member = tar.getmember(member_name)
        offset = member.offset_data + member.size // 2
    with bundle.open("r+b") as handle:
        handle.seek(offset)
        byte = handle.read(1)
        handle.seek(offset)
        handle.write(bytes([byte[0] ^ 0x01]))


def test_untouched_bundle_verifies_against_the_expected_key(bundle: Path, keys: tuple[Path, Path]) -> None:
    result = verify_bundle(bundle, public_key=keys[1])
    assert result.ok, result.lines()
    assert result.checked == len(KINDS) and result.key_source == "expected"
    with tarfile.open(bundle) as tar:
        names = tar.getnames()
    assert {FILES + kind for kind in KINDS} <= set(names) and names[-2:] == [MANIFEST, SIGNATURE]
    self_checked = verify_bundle(bundle)
    assert self_checked.ok and self_checked.key_source == "bundle"
    assert "compare this fingerprint" in "\n".join(self_checked.lines())


@pytest.mark.parametrize("kind", KINDS)
def test_flipped_byte_in_any_file_is_detected_and_the_file_named(bundle: Path, keys: tuple[Path, Path], tmp_path: Path,
                                                                  kind: str) -> None:
    copy = _copy(bundle, tmp_path)
    _flip_byte_of(copy, FILES + kind)
    result = verify_bundle(copy, public_key=keys[1])
    assert not result.ok and result.altered == [FILES + kind]
    assert result.signature_valid  # the manifest itself is intact
    assert f"ALTERED: {FILES + kind}" in result.lines()


@pytest.mark.parametrize("member", [MANIFEST, SIGNATURE])
def test_flipped_byte_in_the_manifest_or_signature_breaks_the_signature(
        bundle: Path, keys: tuple[Path, Path], tmp_path: Path, member: str) -> None:
    copy = _copy(bundle, tmp_path)
    _flip_byte_of(copy, member)
    for key in (keys[1], None):
        result = verify_bundle(copy, public_key=key)
        assert not result.ok and not result.signature_valid
        assert any(member in line for line in result.altered), result.lines()


def _rewrite(bundle: Path, out: Path, drop: str | None = None, add: tuple[str, bytes] | None = None) -> Path:
    with tarfile.open(bundle) as source, tarfile.open(out, "w") as target:
        for member in source.getmembers():
            if member.name != drop:
                target.addfile(member, source.extractfile(member))
        if add:
            info = tarfile.TarInfo(add[0])
            info.size = len(add[1])
            target.addfile(info, io.BytesIO(add[1]))
    return out


def test_added_and_removed_files_are_named(bundle: Path, keys: tuple[Path, Path], tmp_path: Path) -> None:
    removed = verify_bundle(_rewrite(bundle, tmp_path / "a.tar", drop=FILES + "reports/report.html"), public_key=keys[1])
    assert not removed.ok and removed.removed == [FILES + "reports/report.html"] and not removed.altered
    added = verify_bundle(_rewrite(bundle, tmp_path / "b.tar", add=(FILES + "reports/extra.txt", b"planted")),
                          public_key=keys[1])
    assert not added.ok and added.added == [FILES + "reports/extra.txt"]


def _cut_points(bundle: Path) -> dict[str, int]:
    with tarfile.open(bundle) as tar:
        signature = tar.getmember(SIGNATURE)
        first = tar.getmembers()[0]
    return {
        "empty": 0,
        "inside the first file": first.offset_data + first.size // 2,
        "inside the signature": signature.offset_data + 10,
        "end marker gone": signature.offset_data + 512,  # data complete, archive end missing
    }


@pytest.mark.parametrize("where", ["empty", "inside the first file", "inside the signature", "end marker gone"])
def test_truncated_bundle_is_a_one_line_error(bundle: Path, tmp_path: Path, where: str) -> None:
    cut = tmp_path / "cut.tar"
    cut.write_bytes(bundle.read_bytes()[:_cut_points(bundle)[where]])
    with pytest.raises(OtfuzzError, match="truncated|not an otfuzz evidence bundle") as error:
        verify_bundle(cut)
    assert "\n" not in str(error.value)


def test_bundle_signed_by_another_key_is_refused(bundle: Path, tmp_path: Path) -> None:
    _, other_public, other_fingerprint = generate_keypair(tmp_path / "other")
    with pytest.raises(OtfuzzError, match="not by the expected key"):
        verify_bundle(bundle, public_key=other_public)
    with pytest.raises(OtfuzzError, match="not by the expected key"):
        verify_bundle(bundle, expected_fingerprint=other_fingerprint)


def test_fingerprint_alone_identifies_the_signer(bundle: Path, keys: tuple[Path, Path]) -> None:
    fingerprint = verify_bundle(bundle, public_key=keys[1]).fingerprint
    assert verify_bundle(bundle, expected_fingerprint=fingerprint.removeprefix("sha256:").upper()).ok


def test_keygen_writes_an_owner_only_private_key_and_never_overwrites(tmp_path: Path) -> None:
    private, public, fingerprint = generate_keypair(tmp_path / "k")
    assert stat.S_IMODE(os.stat(private).st_mode) == 0o600
    assert public.read_text().startswith("-----BEGIN PUBLIC KEY-----") and fingerprint.startswith("sha256:")
    with pytest.raises(OtfuzzError, match="already exists"):
        generate_keypair(tmp_path / "k")
    assert generate_keypair(tmp_path / "k", force=True)[2] != fingerprint


def test_unusable_keys_and_run_folders_are_one_line_errors(tmp_path: Path, keys: tuple[Path, Path]) -> None:
    run = tmp_path / "run"
    run.mkdir()
    (run / "evidence.sqlite").write_bytes(b"x")
    garbage = tmp_path / "garbage.key"
    garbage.write_text("not a key")
    with pytest.raises(OtfuzzError, match="not a PEM private key"):
        create_bundle(run, garbage, tmp_path / "b.tar")
    with pytest.raises(OtfuzzError, match="cannot read private key"):
        create_bundle(run, tmp_path / "missing.key", tmp_path / "b.tar")
    with pytest.raises(OtfuzzError, match="not a PEM private key|not an Ed25519 private key"):
        create_bundle(run, keys[1], tmp_path / "b.tar")  # a public key where the private one belongs
    with pytest.raises(OtfuzzError, match="does not exist"):
        create_bundle(tmp_path / "nowhere", keys[0], tmp_path / "b.tar")
    (run / "link").symlink_to("/etc/hostname")
    with pytest.raises(OtfuzzError, match="symbolic link"):
        create_bundle(run, keys[0], tmp_path / "b.tar")


def test_damaged_member_header_fails_verification_and_says_where(bundle: Path, keys: tuple[Path, Path], tmp_path: Path) -> None:
    copy = _copy(bundle, tmp_path)
    with tarfile.open(copy) as tar:
        header = tar.getmember(FILES + "reports/report.html").offset
    with copy.open("r+b") as handle:
        handle.seek(header + 20)  # inside the name field: the header checksum no longer matches
        byte = handle.read(1)
        handle.seek(header + 20)
        handle.write(bytes([byte[0] ^ 0x20]))
    result = verify_bundle(copy, public_key=keys[1])
    assert not result.ok
    assert any("archive structure altered" in p for p in result.problems), result.lines()
    assert FILES + "reports/report.html" in result.removed
