"""MkDocs hooks of the documentation site (mkdocs.yml).

* A guide's link to a file of the repository outside docs/ (``../benchmarks/results/x.json``) works on the site
  too: the file is copied into the site under ``repository/`` and the link is pointed there, so the same Markdown
  reads correctly on the forge and on the site. A link to a file that does not exist is left alone, for the strict
  build to report.
* The docstrings' Sphinx roles (``:func:`tsn.x.y```, ``:class:`~tsn.errors.TsnError```) become links to the API
  pages where the target is documented there, and code otherwise (mkdocs-autorefs' optional references).
"""

from __future__ import annotations

import posixpath
import re
from pathlib import Path
from typing import Any

from mkdocs.structure.files import File, Files

_LINK = re.compile(r"\]\((\.\./[^)#\s]+)")
_ROLE = re.compile(r":(?:func|class|meth|mod|attr|data|exc|obj):<code>(~?)([\w.]+)(\(\))?</code>")
_PREFIX = "repository"


def _targets(markdown: str, page_uri: str, docs: Path) -> dict[str, str]:
    """Link -> path relative to the repository root, for links that leave docs/ and name an existing file."""
    found = {}
    for link in _LINK.findall(markdown):
        inside_docs = posixpath.normpath(posixpath.join(posixpath.dirname(page_uri), link))
        if inside_docs.startswith("../") and (docs / inside_docs).resolve().is_file():
            found[link] = inside_docs[len("../"):]
    return found


def on_files(files: Files, config: Any) -> Files:
    docs = Path(config["docs_dir"])
    for page in [f for f in files if f.src_uri.endswith(".md")]:
        for path in _targets(Path(page.abs_src_path).read_text(encoding="utf-8"), page.src_uri, docs).values():
            uri = f"{_PREFIX}/{path}"
            if files.get_file_from_path(uri) is None:
                files.append(File.generated(config, uri, abs_src_path=str((docs / ".." / path).resolve())))
    return files


def on_page_markdown(markdown: str, page: Any, config: Any, files: Files) -> str:
    docs = Path(config["docs_dir"])
    for link, path in _targets(markdown, page.file.src_uri, docs).items():
        target = posixpath.relpath(f"{_PREFIX}/{path}", posixpath.dirname(page.file.src_uri) or ".")
        markdown = markdown.replace(f"]({link}", f"]({target}")
    return markdown


def _role(match: re.Match[str]) -> str:
    short, target, call = match[1], match[2], match[3] or ""
    shown = (target.rsplit(".", 1)[-1] if short else target) + call
    if not target.startswith("tsn."):  # a name relative to its docstring: no identifier to link to
        return f"<code>{shown}</code>"
    return f'<autoref identifier="{target}" optional><code>{shown}</code></autoref>'


def on_page_content(html: str, page: Any, config: Any, files: Files) -> str:
    return _ROLE.sub(_role, html)
