"""The other pages: ``/report.html``, ``/menu.html``, ``/models.html``, ``/label.html``.

Beside the cashier page (``/``, :meth:`edge.web.app.ControlPlane.index`):
plain HTML files of the static folder with their own scripts
(``report.js``, ``menu.js``, ``models.js``, ``label.js``; the CSP of :mod:`edge.web.headers` forbids
inline scripts). They are open like the cashier page; the data they show
needs a token (:mod:`edge.web.report`, :mod:`edge.web.menu_routes`,
:mod:`edge.web.model_routes`, :mod:`edge.web.label_routes`).
"""

from __future__ import annotations

from pathlib import Path

from aiohttp import web

from edge.web.openapi import Reply, operation
from edge.web.payloads import ErrorBody, error

PAGES = ("report.html", "menu.html", "models.html", "label.html")
"""Pages served at ``/{name}`` from the static folder."""


class Pages:
    """Serves :data:`PAGES` from one static folder.

    Parameters
    ----------
    static_dir
        The resolved static folder.
    """

    def __init__(self, static_dir: Path) -> None:
        self.static_dir = static_dir

    @operation("The report, menu, models or labelling page", "page", {
        200: Reply("the page", media_type="text/html", schema={"type": "string"}),
        404: Reply("the page is not installed", ErrorBody)})
    async def page(self, request: web.Request) -> web.StreamResponse:
        """``/report.html``, ``/menu.html``, ``/models.html`` or ``/label.html``
        (revalidated, as ``/``)."""
        name = request.path.lstrip("/")
        path = self.static_dir / name
        if name not in PAGES or not path.is_file():
            return error(404, f"no page {name!r} installed")
        return web.FileResponse(path, headers={"Cache-Control": "no-cache"})


def add_pages(app: web.Application, static_dir: Path) -> None:
    """Add ``GET /report.html``, ``/menu.html``, ``/models.html`` and ``/label.html``
    from ``static_dir``."""
    pages = Pages(static_dir)
    for name in PAGES:
        app.router.add_get(f"/{name}", pages.page)
