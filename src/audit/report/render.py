"""HTML from the Jinja2 templates, then PDF/A-3b with the manifest attached.

WeasyPrint embeds (subsets) every font, so the PDF opens anywhere; the JSON
manifest travels inside the PDF as an associated file, which is what PDF/A-3
allows and what `audit verify` reads back.
"""

from __future__ import annotations

import base64
from pathlib import Path

import jinja2
import weasyprint

from audit.resources import resource_dir
from audit.stats import format_pvalue

MANIFEST_NAME = "audit-manifest.json"


def environment(templates: Path | None = None) -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(templates or resource_dir("templates"))),
        autoescape=jinja2.select_autoescape(["html", "j2"]),
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters["svg_uri"] = lambda svg: "data:image/svg+xml;base64," + base64.b64encode(svg.encode()).decode()
    env.filters["pformat"] = _pformat
    return env


def _pformat(log10_p: float | None) -> str:
    return "–" if log10_p is None else format_pvalue(log10_p)


def render_html(template: str, context: dict, templates: Path | None = None) -> str:
    return environment(templates).get_template(template).render(**context)


def html_to_pdf(html: str, manifest: bytes, title: str, templates: Path | None = None) -> bytes:
    """PDF/A-3b bytes of ``html`` with ``manifest`` attached as JSON data."""
    base = templates or resource_dir("templates")
    document = weasyprint.HTML(string=html, base_url=str(base))
    stylesheet = weasyprint.CSS(filename=str(base / "report.css"))
    attachment = weasyprint.Attachment(
        string=manifest.decode("utf-8"),
        name=MANIFEST_NAME,
        description="Audit manifest: inputs and hashes, parameters, seed, versions and every number in this report",
        relationship="Data",
    )
    return document.write_pdf(
        stylesheets=[stylesheet],
        pdf_variant="pdf/a-3b",
        attachments=[attachment],
        uncompressed_pdf=False,
        custom_metadata=True,
        pdf_identifier=title.encode()[:32] or None,
    )
