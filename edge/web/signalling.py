"""The bodies of WebRTC signalling: a viewer's offer and the hub's answer.

Where it sits: at the HTTP boundary of the WebRTC view. :mod:`edge.web.offers`
validates ``POST /api/streams/{id}/webrtc`` against :class:`OfferBody` and
answers with an :class:`AnswerBody`; :mod:`edge.web.openapi` publishes both.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field


class OfferBody(BaseModel):
    """``POST /api/streams/{id}/webrtc`` body."""

    model_config = ConfigDict(extra="forbid")

    sdp: str = Field(min_length=1, description="the complete offer, ICE candidates gathered")
    type: Literal["offer"]


class AnswerBody(BaseModel):
    """The answer to an offer."""

    sdp: str = Field(description="the complete answer")
    type: Literal["answer"]
