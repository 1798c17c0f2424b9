"""Model rollout on a running box: registry, shadow, promote, roll back (docs/MODELS.md).

``upload / fleet ─▶ registry (storage.dir/models) ─▶ shadow (candidate beside the
serving model) ─▶ promote (between two frames) ─▶ rollback (by hand, or by itself)``

- :mod:`edge.rollout.store`: the versioned model store (file by SHA-256, index,
  states, history).
- :mod:`edge.rollout.controller`: :class:`~edge.rollout.controller.Rollout`,
  the daemon's :class:`RolloutControl`: loads candidates beside the serving
  model, runs the shadow copy of tracking and billing, swaps models.
- :mod:`edge.rollout.shadow`: the shadow's bills and their agreement figures.

The HTTP routes (:mod:`edge.web.model_routes`), the shell (``dishtracker
models``) and the fleet (:mod:`edge.fleet.models`) act through
:class:`RolloutControl`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Literal, Protocol

if TYPE_CHECKING:
    from edge.rollout.store import ModelStore

ModelState = Literal["serving", "candidate", "shadow", "retired"]
MODEL_STATES: tuple[ModelState, ...] = ("serving", "candidate", "shadow", "retired")


class RolloutError(Exception):
    """A rollout request that cannot be carried out.

    Attributes
    ----------
    status : int
        The HTTP status that says it: 404 unknown model, 409 not possible in the
        current state (nothing to roll back to, a swap in progress), 422 the
        model does not load or breaks the contract.
    """

    def __init__(self, message: str, status: int = 409) -> None:
        super().__init__(message)
        self.status = status


class RolloutControl(Protocol):
    """What the routes, the shell and the fleet drive (:class:`edge.rollout.controller.Rollout`)."""

    store: ModelStore

    async def shadow(self, model_id: str, *, actor: str | None = None) -> dict[str, Any]:
        """Load ``model_id`` beside the serving model and shadow it (replaces an
        earlier shadow); answers the model's entry as JSON. Raises
        :class:`RolloutError`."""
        ...

    async def promote(self, model_id: str, *, actor: str | None = None) -> dict[str, Any]:
        """Make ``model_id`` serve every stream between two frames (loads it first
        unless it is the shadow); answers its entry. Raises :class:`RolloutError`."""
        ...

    async def rollback(self, *, actor: str | None = None,
                       reason: str = "manual") -> dict[str, Any]:
        """Serve the model that served before the current one again; answers its
        entry. Raises :class:`RolloutError` (409) when there is none."""
        ...

    async def retire(self, model_id: str, *, actor: str | None = None) -> dict[str, Any]:
        """Stop shadowing ``model_id`` (if it is the shadow) and mark it retired;
        answers its entry. Raises :class:`RolloutError` (409) for the serving model."""
        ...

    def status(self) -> dict[str, Any]:
        """``{"serving": {"id", "version", "classes"} | None, "shadow": {"id",
        "version", "classes", "stats": {...}, "streams": [...]} | None,
        "swapping": bool, "rollback_to": {"id", "version"} | None,
        "probation_s_left": float | None}`` (JSON-ready;
        ``stats`` as :meth:`edge.rollout.shadow.ShadowBook.stats`)."""
        ...
