"""The JSON results report, validated against the published schema before it is written."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import jsonschema

from otfuzz.errors import OtfuzzError
from otfuzz.report.results import results_schema


def validate_results(doc: dict[str, Any]) -> None:
    """Raise OtfuzzError naming the first place where `doc` departs from the schema."""
    validator = jsonschema.Draft202012Validator(results_schema(), format_checker=jsonschema.FormatChecker())
    error = jsonschema.exceptions.best_match(validator.iter_errors(doc))
    if error is not None:
        where = "/".join(str(p) for p in error.absolute_path) or "(document)"
        raise OtfuzzError(f"results document does not match its schema at {where}: {error.message}")


def write_json(doc: dict[str, Any], path: Path) -> Path:
    """Validate and write atomically (a half-written report must never look complete)."""
    validate_results(doc)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    try:
        tmp.write_text(json.dumps(doc, indent=2, sort_keys=True) + "\n")
        os.replace(tmp, path)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise OtfuzzError(f"cannot write {path}: {exc.strerror}") from None
    return path
