"""The bodies of WebRTC signalling: a viewer's offer and the hub's answer.

Where it sits: at the HTTP boundary of the WebRTC view. :mod:`edge.web.offers`
validates ``POST /api/streams/{id}/webrtc`` against :class:`OfferBody` and
answers with an :class:`AnswerBody`; :mod:`edge.web.openapi` publishes both.

An offer is bounded before aiortc sees it (:func:`offer_problem`): aioice
pairs every remote candidate with every local one on the event loop, and one
offer with about 1 000 candidates stalled every stream's video for half a
second. A browser's offer for the cashier's page holds one video m-line and a
handful of candidates (one per interface and protocol, bundled), far below
:data:`MAX_CANDIDATES` and :data:`MAX_MEDIA`.
"""

from __future__ import annotations

from typing import Literal

from aiortc.sdp import SessionDescription
from pydantic import BaseModel, ConfigDict, Field

MAX_CANDIDATES = 64
"""ICE candidates an offer may carry, over all its m-lines."""

MAX_MEDIA = 8
"""m-lines (media sections) an offer may have; the page sends one."""


class OfferBody(BaseModel):
    """``POST /api/streams/{id}/webrtc`` body."""

    model_config = ConfigDict(extra="forbid")

    sdp: str = Field(min_length=1, description="the complete offer, ICE candidates gathered")
    type: Literal["offer"]
    overlay: Literal["cashier", "engineer"] | None = Field(
        None, description="what the video shows this viewer: cashier (trays with their bill "
                          "so far, dishes by menu name, flagged ones marked) or engineer "
                          "(track ids, class keys, vote shares, the corner stamp); default: "
                          "server.overlay")


class AnswerBody(BaseModel):
    """The answer to an offer."""

    sdp: str = Field(description="the complete answer")
    type: Literal["answer"]


def offer_problem(sdp: str) -> str | None:
    """Why ``sdp`` is refused before it is applied, or None.

    Counts m-lines and candidates first (cheap, bounded by the body limit),
    then parses the offer with aiortc's own parser, so a malformed one is
    refused here. Blocking work: call it off the event loop
    (``asyncio.to_thread``).
    """
    lines = sdp.splitlines()
    media = sum(1 for line in lines if line.startswith("m="))
    candidates = sum(1 for line in lines if line.startswith("a=candidate:"))
    if media > MAX_MEDIA:
        return f"the offer has {media} m-lines; at most {MAX_MEDIA} are accepted"
    if candidates > MAX_CANDIDATES:
        return (f"the offer has {candidates} ICE candidates; at most {MAX_CANDIDATES} are "
                "accepted")
    try:
        SessionDescription.parse(sdp)
    except Exception as err:  # aiortc's parser raises ValueError, IndexError, KeyError, ...
        return f"cannot apply the offer: not valid SDP: {type(err).__name__}: {err}"
    return None
