"""The API document for people: Swagger UI over ``/docs.json``, at ``/docs``.

Swagger UI's files come from the pinned ``swagger-ui-bundle`` package and are served by
this process (no CDN: the service's hosts reach no outside network). Neither the page nor
the document names a household, so, like the probes, both are answered without a key and
are not audited; everything they describe still needs one.
"""

from __future__ import annotations

from functools import cache

from swagger_ui_bundle import swagger_ui_path

PAGE_PATH, DOCUMENT_PATH, ASSETS_PREFIX = "/docs", "/docs.json", "/docs/"

#: The only files served from the bundle, with their types.
ASSETS = {
    "swagger-ui.css": "text/css; charset=utf-8",
    "swagger-ui-bundle.js": "application/javascript; charset=utf-8",
    "swagger-ui-standalone-preset.js": "application/javascript; charset=utf-8",
    "favicon-32x32.png": "image/png",
    "credref-docs.js": "application/javascript; charset=utf-8",
}

PAGE = """<!doctype html>
<html lang="en">
<head>
  <meta charset="utf-8">
  <title>credref reference service: API</title>
  <link rel="stylesheet" href="/docs/swagger-ui.css">
  <link rel="icon" type="image/png" href="/docs/favicon-32x32.png">
</head>
<body>
  <div id="swagger-ui"></div>
  <script src="/docs/swagger-ui-bundle.js"></script>
  <script src="/docs/swagger-ui-standalone-preset.js"></script>
  <script src="/docs/credref-docs.js"></script>
</body>
</html>
"""

#: Swagger UI pointed at credref's document (a file of its own: the page has no inline script).
INIT = """window.onload = function () {
  window.ui = SwaggerUIBundle({
    url: "/docs.json",
    dom_id: "#swagger-ui",
    deepLinking: true,
    presets: [SwaggerUIBundle.presets.apis, SwaggerUIStandalonePreset],
    layout: "BaseLayout",
  });
};
"""


def is_documentation(path: str) -> bool:
    return path in (PAGE_PATH, DOCUMENT_PATH) or path.startswith(ASSETS_PREFIX)


@cache
def asset(name: str) -> tuple[bytes, str] | None:
    """A file of the page (its bytes and type), or None for any other name."""
    kind = ASSETS.get(name)
    if kind is None:
        return None
    if name == "credref-docs.js":
        return INIT.encode(), kind
    return (swagger_ui_path / name).read_bytes(), kind
