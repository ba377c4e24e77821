"""MkDocs hook: a link from a page to a file of the repository outside docs/ (`../tests/...`).

The site holds docs/ only, so such a link would be broken there. It becomes a link to the file in
the repository when `repo_url` is set, else the path as code; a target that does not exist is a
warning (an error in the strict build), as a broken link between pages is.
"""

from __future__ import annotations

import logging
import re
from pathlib import Path
from typing import Any

log = logging.getLogger("mkdocs.plugins.repository_links")

# [text](../path) or [text](../path#anchor), not images and not links that stay in docs/
LINK = re.compile(r"(?<!!)\[([^\]]+)\]\((\.\./[^)#\s]+)(#[^)\s]*)?\)")


def on_page_markdown(markdown: str, page: Any, config: Any, files: Any) -> str:
    docs = Path(config["docs_dir"]).resolve()
    here = (docs / page.file.src_path).parent
    repository = docs.parent

    def rewrite(match: re.Match[str]) -> str:
        text, target, anchor = match.group(1), match.group(2), match.group(3) or ""
        path = (here / target).resolve()
        if path.is_relative_to(docs):
            return match.group(0)  # a page of the site: MkDocs checks it
        if not path.is_relative_to(repository) or not path.exists():
            log.warning("Doc file '%s' links to '%s', which is not in the repository", page.file.src_path, target)
            return match.group(0)
        relative = path.relative_to(repository).as_posix()
        if config.get("repo_url"):
            return f"[{text}]({config['repo_url'].rstrip('/')}/blob/main/{relative}{anchor})"
        return text if text.startswith("`") else f"`{relative}`" if text == relative else f"{text} (`{relative}`)"

    return LINK.sub(rewrite, markdown)
