"""Read the files embedded in a PDF (the audit manifest travels this way).

PDF/A-3 files list attachments in the document's ``/Names /EmbeddedFiles``
name tree and in the catalogue's ``/AF`` array; WeasyPrint writes both (and
may list one file twice), so both are read and merged by file name.
"""

from __future__ import annotations

from pyhanko.pdf_utils import generic
from pyhanko.pdf_utils.reader import PdfFileReader

MAX_NAME_TREE_DEPTH = 32
"""Real name trees are shallow; a deeper one is malformed or built to loop."""


class AttachmentError(ValueError):
    """The PDF's attachments are contradictory or malformed."""


def embedded_files(reader: PdfFileReader) -> dict[str, bytes]:
    """The document-level embedded files of ``reader``, decoded, by file name."""
    root = reader.root
    specs: list[generic.DictionaryObject] = []
    names = _get(root, "/Names")
    if isinstance(names, generic.DictionaryObject) and "/EmbeddedFiles" in names:
        specs += _name_tree_values(names["/EmbeddedFiles"], 0)
    associated = _get(root, "/AF")
    if isinstance(associated, generic.ArrayObject):
        specs += [associated[i] for i in range(len(associated))]
    files: dict[str, bytes] = {}
    for spec in specs:
        if not isinstance(spec, generic.DictionaryObject) or "/EF" not in spec:
            continue
        name = str(_get(spec, "/UF") or _get(spec, "/F") or "")
        streams = spec["/EF"]
        data = (_get(streams, "/UF") or streams["/F"]).data
        if files.get(name, data) != data:
            raise AttachmentError(f"two different attached files are both named {name!r}")
        files[name] = data
    return files


def _get(dictionary: generic.DictionaryObject, key: str):
    """``dictionary[key]`` resolved, or None (pyHanko resolves references in ``[]`` only, not in ``get``)."""
    return dictionary[key] if key in dictionary else None


def _name_tree_values(node: generic.DictionaryObject, depth: int) -> list:
    if depth > MAX_NAME_TREE_DEPTH:
        raise AttachmentError("the embedded-files name tree is nested too deeply")
    values = []
    if "/Names" in node:
        pairs = node["/Names"]
        values += [pairs[i] for i in range(1, len(pairs), 2)]
    if "/Kids" in node:
        kids = node["/Kids"]
        for i in range(len(kids)):
            values += _name_tree_values(kids[i], depth + 1)
    return values
