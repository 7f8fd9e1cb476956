"""Writing a run's reports: every format from one results document and one compliance section.

`write_reports` is what `otfuzz report` calls once it has the results (from the store) and the
compliance section (from `build_evidence`). The section is checked against its published schema
first, so no format is ever written from evidence the JSON report could not carry. With OSCAL,
the catalogue and mapping the verdicts came from are copied beside the reports, because the
OSCAL document points to them by name and hash.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable, Iterable, Mapping
from importlib import resources
from pathlib import Path
from types import MappingProxyType
from typing import Any

import jsonschema

from otfuzz.compliance.catalogue import catalogue_path
from otfuzz.compliance.mapping import mapping_path
from otfuzz.errors import OtfuzzError
from otfuzz.report import oscal

FILE_NAMES: Mapping[str, str] = MappingProxyType({
    "json": "results.json",
    "html": "report.html",
    "pdf": "report.pdf",
    "junit": "junit.xml",
    "oscal": "oscal-assessment-results.json",
})
FORMATS = tuple(FILE_NAMES)


def parse_formats(value: str | Iterable[str]) -> tuple[str, ...]:
    """'html,pdf' or a list of names -> checked format names, in the order given."""
    names = [n.strip().lower() for n in (value.split(",") if isinstance(value, str) else value) if n.strip()]
    if not names:
        raise OtfuzzError(f"no report format given (choose from {', '.join(FORMATS)})")
    for name in names:
        if name not in FILE_NAMES:
            raise OtfuzzError(f"unknown report format '{name}' (choose from {', '.join(FORMATS)})")
    return tuple(dict.fromkeys(names))


def compliance_schema() -> dict[str, Any]:
    """The published JSON Schema of the compliance section."""
    return json.loads(resources.files("otfuzz.report").joinpath("schema/compliance.schema.json").read_text())


def validate_evidence(evidence: Mapping[str, Any]) -> None:
    """Raise jsonschema.ValidationError if the section departs from its schema (a bug, not a user error)."""
    jsonschema.Draft202012Validator(compliance_schema()).validate(evidence)


def write_reports(results: Mapping[str, Any], evidence: Mapping[str, Any], formats: Iterable[str], out_dir: Path, *,
                  catalogue_file: Path | None = None, mapping_file: Path | None = None) -> list[Path]:
    """Write each requested format into `out_dir`; returns the files written."""
    validate_evidence(evidence)
    results = with_requirements(results, evidence)
    writers = _writers()
    written = []
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
        for name in parse_formats(list(formats)):
            written.append(writers[name](results, evidence, out_dir / FILE_NAMES[name]))
            if name == "oscal":
                for source, href in ((catalogue_file or catalogue_path(), oscal.CATALOGUE_HREF),
                                     (mapping_file or mapping_path(), oscal.MAPPING_HREF)):
                    written.append(Path(shutil.copyfile(source, out_dir / href)))
    except OSError as exc:
        raise OtfuzzError(f"cannot write reports to {out_dir}: {exc.strerror or exc}") from None
    return written


def with_requirements(results: Mapping[str, Any], evidence: Mapping[str, Any]) -> dict[str, Any]:
    """The results with each finding naming the requirements it counts against."""
    against: dict[Any, list[str]] = {}
    for req in evidence.get("requirements") or []:
        for finding_id in req.get("finding_ids") or []:
            against.setdefault(finding_id, []).append(req["id"])
    out = dict(results)
    out["findings"] = [{**f, "requirements": against.get(f.get("id"), [])} for f in results.get("findings") or []]
    return out


Writer = Callable[[Mapping[str, Any], Mapping[str, Any], Path], Path]


def _writers() -> dict[str, Writer]:
    # Imported here so that `otfuzz report --format json` never needs WeasyPrint.
    from otfuzz.report.html import write_html
    from otfuzz.report.junit import write_junit
    from otfuzz.report.oscal import write_oscal

    def write_pdf(results: Mapping[str, Any], evidence: Mapping[str, Any], path: Path) -> Path:
        from otfuzz.report.pdf import write_pdf as render

        return render(results, evidence, path)

    def write_json(results: Mapping[str, Any], evidence: Mapping[str, Any], path: Path) -> Path:
        from otfuzz.report.json_report import write_json as write

        return write({**results, "compliance": dict(evidence)}, path)

    return {"json": write_json, "html": write_html, "pdf": write_pdf, "junit": write_junit, "oscal": write_oscal}
