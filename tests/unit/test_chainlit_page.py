"""The page the chainlit role serves has no reference to another origin
(roles/chainlit/filter_plugins/chainlit.py): the font and KaTeX links of
Chainlit's index.html are dropped, the page's own assets stay, and anything
else pointing elsewhere stops the play instead of reaching browsers."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
from ansible.errors import AnsibleFilterError

PROJECT = Path(__file__).resolve().parents[2]
# Loaded under its own name: "chainlit" is also the name of Chainlit's package.
_SPEC = importlib.util.spec_from_file_location(
    "chainlit_role_filters", PROJECT / "roles" / "chainlit" / "filter_plugins" / "chainlit.py")
_FILTERS = importlib.util.module_from_spec(_SPEC)
_SPEC.loader.exec_module(_FILTERS)
chainlit_local_index = _FILTERS.chainlit_local_index

# The shape of Chainlit 2.x's frontend/dist/index.html: placeholders the server
# fills in, a font block it may replace, CDN links outside that block.
SHIPPED = """<!doctype html>
<html lang="en">
  <head>
    <meta charset="UTF-8" />
    <!-- TAG INJECTION PLACEHOLDER -->
    <link rel="preconnect" href="https://fonts.googleapis.com" />
    <link rel="preconnect" href="https://fonts.gstatic.com" crossorigin />
    <!-- FONT START -->
    <link
      href="https://fonts.googleapis.com/css2?family=Inter:wght@400;500;700&display=swap"
      rel="stylesheet"
    />
    <!-- FONT END -->
    <link
      rel="stylesheet"
      href="https://cdn.jsdelivr.net/npm/katex@0.16.22/dist/katex.min.css"
    />
    <!-- JS INJECTION PLACEHOLDER -->
    <!-- CSS INJECTION PLACEHOLDER -->
    <script type="module" crossorigin src="/assets/index-abc.js"></script>
    <link rel="stylesheet" crossorigin href="/assets/index-def.css">
  </head>
  <body><div id="root"></div></body>
</html>
"""


def test_cdn_and_font_links_are_removed():
    page = chainlit_local_index(SHIPPED)
    for gone in ("fonts.googleapis.com", "fonts.gstatic.com", "jsdelivr", "katex", "preconnect", "//"):
        assert gone not in page


def test_own_assets_and_server_placeholders_stay():
    page = chainlit_local_index(SHIPPED)
    assert '<script type="module" crossorigin src="/assets/index-abc.js"></script>' in page
    assert '<link rel="stylesheet" crossorigin href="/assets/index-def.css">' in page
    for placeholder in ("TAG INJECTION PLACEHOLDER", "JS INJECTION PLACEHOLDER", "CSS INJECTION PLACEHOLDER",
                        "<!-- FONT START --><!-- FONT END -->"):
        assert placeholder in page


def test_cleaning_twice_changes_nothing():
    once = chainlit_local_index(SHIPPED)
    assert chainlit_local_index(once) == once


def test_external_script_is_removed_with_its_closing_tag():
    page = chainlit_local_index(SHIPPED.replace(
        "</head>", '<script async src="https://cdn.example.org/x.js"></script>\n</head>'))
    assert "cdn.example.org" not in page and page.count("<script") == 1


@pytest.mark.parametrize("leak", [
    '<img src="https://tracker.example.org/p.gif">',
    "<style>@import 'https://fonts.example.org/x.css';</style>",
    '<style>body { background: url(//cdn.example.org/bg.png) }</style>',
    '<meta property="og:image" content="https://cdn.example.org/banner.png">',
    '<script src="https://cdn.example.org/x.js">var a;</script>',
])
def test_any_other_reference_to_another_origin_stops_the_play(leak):
    with pytest.raises(AnsibleFilterError, match="still refers to another origin"):
        chainlit_local_index(SHIPPED.replace("</head>", leak + "\n</head>"))


def test_input_that_is_not_a_page_is_refused():
    with pytest.raises(AnsibleFilterError, match="not Chainlit's index.html"):
        chainlit_local_index("")
