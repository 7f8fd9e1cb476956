"""The PDF report is a real PDF whose text holds the requirement matrix, device bytes included."""

from __future__ import annotations

from pathlib import Path

import pytest
from report_samples import hostile_results

from otfuzz.compliance.evidence import EvidenceOptions, build_evidence
from otfuzz.report.pdf import write_pdf

pypdf = pytest.importorskip("pypdf", reason="pypdf is a test dependency (pip install -e .[test])")


def test_pdf_carries_the_requirement_matrix_as_text(tmp_path: Path) -> None:
    results = hostile_results()
    evidence = build_evidence(results, EvidenceOptions(component_type="embedded-device", sl_t=(2,) * 7))
    path = write_pdf(results, evidence, tmp_path / "report.pdf")
    assert path.read_bytes().startswith(b"%PDF-")
    reader = pypdf.PdfReader(str(path))
    text = " ".join(" ".join(page.extract_text().split()) for page in reader.pages)
    assert "2. Findings" in text and "3. Requirement matrix" in text
    for row in evidence["requirements"]:
        assert row["id"] in text, row["id"]
    assert "Input validation" in text and "Denial of service protection" in text
    assert "Result: FAIL" in text and "target (SL-T) against capability (SL-C)" in text
    assert "<script>window.__pwned = 2</script>" in text  # the device's bytes, printed as text
    assert len(reader.pages) >= 3
