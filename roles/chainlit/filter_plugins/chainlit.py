# Copyright: private-llm maintainers
# Apache License 2.0 (see the project's README)
"""Filters of the chainlit role.

chainlit_local_index: Chainlit's index.html makes the browser contact Google
Fonts (preconnect + stylesheet) and jsDelivr (the KaTeX stylesheet). The role
serves a copy of the page without them (Chainlit's `custom_build` setting);
the UI falls back to the system's sans-serif font, and LaTeX rendering, which
would need KaTeX's stylesheet, is off. The filter fails when anything in the
page still points at another origin, so a Chainlit upgrade that adds one
stops the play instead of leaking."""

from __future__ import annotations

import re

from ansible.errors import AnsibleFilterError

# <link ...> whose href is absolute (http:, https: or protocol-relative): the
# font preconnects, the Google Fonts and KaTeX stylesheets.
_EXTERNAL_LINK = re.compile(r"""<link\b[^>]*\bhref\s*=\s*["'](?:https?:)?//[^"']*["'][^>]*>[ \t]*\n?""",
                            re.IGNORECASE)
# <script src="..."> from another origin, with its closing tag.
_EXTERNAL_SCRIPT = re.compile(
    r"""<script\b[^>]*\bsrc\s*=\s*["'](?:https?:)?//[^"']*["'][^>]*>\s*</script>[ \t]*\n?""", re.IGNORECASE)
# What still counts as a reference to another origin after the clean-up.
_ANY_EXTERNAL = re.compile(r"""(?:\b(?:href|src|content)\s*=\s*["']|url\(\s*["']?|@import\s+["'])(?:https?:)?//""",
                           re.IGNORECASE)
_EMPTY_FONT_BLOCK = re.compile(r"<!-- FONT START -->\s*<!-- FONT END -->")


def chainlit_local_index(html):
    """Chainlit's index.html without references to other origins."""
    if not isinstance(html, str) or "<html" not in html.lower():
        raise AnsibleFilterError("chainlit_local_index: the input is not Chainlit's index.html")
    cleaned = _EXTERNAL_SCRIPT.sub("", _EXTERNAL_LINK.sub("", html))
    cleaned = _EMPTY_FONT_BLOCK.sub("<!-- FONT START --><!-- FONT END -->", cleaned)
    leftover = _ANY_EXTERNAL.search(cleaned)
    if leftover:
        start = max(leftover.start() - 60, 0)
        raise AnsibleFilterError(
            "chainlit_local_index: Chainlit's index.html still refers to another origin near "
            f"{cleaned[start:leftover.end() + 60]!r}; extend the clean-up in roles/chainlit/filter_plugins/chainlit.py")
    return cleaned


class FilterModule:
    def filters(self):
        return {"chainlit_local_index": chainlit_local_index}
