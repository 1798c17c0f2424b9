"""Fleet events over MQTT: the journal's outbox, status and health to a broker.

``journal (outbox) ─▶ fleet publisher ─▶ MQTT broker`` (docs/FLEET.md).
The MQTT client is the optional ``mqtt`` extra: :func:`create_fleet` imports
it only when ``fleet.enabled`` is true, so the daemon runs without it
otherwise. With ``fleet.models`` the fleet also hands the box its models
(:mod:`edge.fleet.models`); with ``fleet.share_examples`` the boxes of a site
share the examples their cashiers teach (:mod:`edge.fleet.examples`).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Protocol

from edge.config import FleetConfig
from edge.errors import MissingExtraError
from edge.metrics import Metrics
from edge.rollout import RolloutError

if TYPE_CHECKING:
    from edge.fleet.examples import ExampleShare
    from edge.fleet.publisher import Outbox
    from edge.learn.service import LearningService
    from edge.rollout import RolloutControl


class Fleet(Protocol):
    """What the daemon drives: :class:`edge.fleet.publisher.FleetPublisher`, or
    :class:`FleetOff` when the fleet is disabled."""

    def start(self) -> None:
        """Start publishing (on the loop)."""
        ...

    def tasks(self) -> list[asyncio.Task[None]]:
        """Tasks the daemon's supervisor watches."""
        ...

    async def close(self, timeout_s: float = 5.0) -> None:
        """Publish what is unsent (bounded), say ``offline``, disconnect."""
        ...

    def status(self) -> dict[str, Any]:
        """JSON-ready state for ``GET /api/fleet``."""
        ...


class FleetOff:
    """The fleet when ``fleet.enabled`` is false: nothing runs, nothing is enqueued."""

    def start(self) -> None:
        """Nothing to start."""

    def tasks(self) -> list[asyncio.Task[None]]:
        """No tasks."""
        return []

    async def close(self, timeout_s: float = 5.0) -> None:
        """Nothing to close."""

    def status(self) -> dict[str, Any]:
        """``{"enabled": false}``."""
        return {"enabled": False}


def create_fleet(config: FleetConfig, outbox: Outbox, metrics: Metrics, *,
                 health: Callable[[], dict[str, Any]] | None = None,
                 rollout: RolloutControl | None = None,
                 max_model_bytes: int | None = None,
                 learning: LearningService | None = None) -> Fleet:
    """The publisher of an enabled ``[fleet]`` config (not started), else :class:`FleetOff`.

    Parameters
    ----------
    config
        The ``[fleet]`` table.
    outbox
        The journal's outbox (the billing service, opened with ``outbox=True``).
    metrics
        Where the ``fleet_*`` metrics go.
    health
        Returns the daemon's part of the health report (streams, journal).
    rollout
        The rollout controller, which ``fleet.models`` needs: the pulled models
        go into its store and through its shadow.
    max_model_bytes
        Largest model file the fleet may fetch, bytes (default:
        :data:`edge.fleet.adoption.DEFAULT_MAX_BYTES`).
    learning
        The learning service, which ``fleet.share_examples`` needs: its journal
        holds the examples to send, received ones go through its
        ``merge_remote``. With ``rollout`` the model store tells each model's
        embedding size (a received example of another size is refused).

    Raises
    ------
    MissingExtraError
        The fleet is enabled and the MQTT client (aiomqtt, the ``mqtt`` extra)
        is not installed.
    ConfigError
        ``fleet.password_file`` cannot be read.
    ValueError
        ``fleet.models`` is true and no ``rollout`` is given, or
        ``fleet.share_examples`` is true and no ``learning`` with a journal.
    """
    if not config.enabled:
        return FleetOff()
    try:
        from edge.fleet.publisher import FleetPublisher  # noqa: PLC0415  # optional extra
    except ImportError as err:
        raise MissingExtraError(
            f"fleet.enabled is true but the MQTT client is not installed ({err.name} is "
            "missing): pip install 'dishtracker-edge[mqtt]', or set fleet.enabled = false"
        ) from err
    models = None
    if config.models:
        if rollout is None:
            raise ValueError("fleet.models needs the rollout controller (create_fleet(rollout=…))")
        from edge.fleet.adoption import DEFAULT_MAX_BYTES  # noqa: PLC0415  # with the publisher only
        from edge.fleet.models import ModelPuller  # noqa: PLC0415  # with the publisher only
        models = ModelPuller(config, FleetPublisher.topics_of(config), rollout,
                             max_bytes=max_model_bytes or DEFAULT_MAX_BYTES)
    examples = _example_share(config, metrics, learning, rollout) \
        if config.share_examples else None
    return FleetPublisher(config, outbox, metrics, health=health,
                          password=config.read_password(), models=models, examples=examples)


def _example_share(config: FleetConfig, metrics: Metrics, learning: LearningService | None,
                   rollout: RolloutControl | None) -> ExampleShare:
    """The share of ``fleet.share_examples`` (with the publisher only)."""
    if learning is None or learning.journal is None:
        raise ValueError("fleet.share_examples needs the learning service and its journal "
                         "(create_fleet(learning=…))")
    from edge.fleet.examples import ExampleShare  # noqa: PLC0415  # with the publisher only
    from edge.fleet.publisher import FleetPublisher  # noqa: PLC0415  # optional extra

    def model_dim(model_id: str) -> int | None:
        if rollout is None:
            return None
        try:
            return rollout.store.get(model_id).embedding_dim
        except RolloutError:  # a model this box does not hold
            return None

    return ExampleShare(FleetPublisher.topics_of(config), learning.journal,
                        learning.merge_remote, metrics, model_dim=model_dim)
