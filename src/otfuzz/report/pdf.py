"""The PDF report: the HTML report's content, laid out for print by WeasyPrint.

WeasyPrint is a real PDF engine (it lays out text with Pango, which Debian packages), so the
PDF carries the requirement matrix as text an assessor can search and copy. The same context
renders both formats; only page rules differ. The PDF engine is given a URL fetcher that
refuses everything, so nothing in a results document can make it read a file or the network.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from otfuzz.errors import OtfuzzError
from otfuzz.report.html import render_html


def _refuse_fetch(url: str, *args: Any, **kwargs: Any) -> dict[str, Any]:
    raise ValueError(f"the report loads no external resources (refused {url[:80]})")


def _fetcher(weasyprint: Any) -> Any:
    """A fetcher that allows only inline data: URLs (WeasyPrint 67+ wants a URLFetcher object)."""
    fetcher_class = getattr(getattr(weasyprint, "urls", None), "URLFetcher", None)
    if fetcher_class is not None:
        return fetcher_class(allowed_protocols={"data"}, allow_redirects=False)
    return _refuse_fetch


def write_pdf(results: Mapping[str, Any], evidence: Mapping[str, Any], path: Path) -> Path:
    """Render the report to `path` as PDF."""
    return html_to_pdf(render_html(results, evidence, for_print=True), path)


def html_to_pdf(html: str, path: Path) -> Path:
    """Lay out a self-contained HTML page as PDF, loading nothing from outside it."""
    try:
        import weasyprint
    except (ImportError, OSError) as exc:  # OSError: Pango or its fonts are missing
        raise OtfuzzError(f"PDF output needs WeasyPrint and Pango ({exc}); install otfuzz's dependencies "
                          "or choose another format") from None
    path.parent.mkdir(parents=True, exist_ok=True)
    document = weasyprint.HTML(string=html, url_fetcher=_fetcher(weasyprint))
    document.write_pdf(str(path), pdf_identifier=b"otfuzz-report")
    return path
