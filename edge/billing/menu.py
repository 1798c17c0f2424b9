"""The site menu as billing uses it: detector class -> bill line."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from edge.billing.model import BillItem
from edge.config import MenuEntry


class Menu:
    """Names, prices and billability of the detector's classes.

    Parameters
    ----------
    entries : mapping of str to MenuEntry
        The site config's ``menu`` (class name -> entry).
    class_names : sequence of str
        The detector's class names (index = class id).
    confirm_below : float
        Lines with a lower class confidence are flagged for review.

    Classes missing from the menu are not billable (and named by their key).
    A dish disabled on the menu (``enabled = false``) is still billed, at its
    price, but its line is flagged for review: dropping it would lose the
    revenue of a dish that is on the tray all the same, and the cashier
    decides (confirm or remove).
    """

    def __init__(self, entries: Mapping[str, MenuEntry], class_names: Sequence[str],
                 confirm_below: float) -> None:
        self.entries = dict(entries)
        self.class_names = tuple(class_names)
        self.confirm_below = confirm_below

    def billable(self, class_id: int) -> bool:
        """True if ``class_id`` goes on a bill."""
        e = self._entry(class_id)
        return e is not None and e.billable

    def item(self, class_id: int, confidence: float, track_id: int) -> BillItem | None:
        """The bill line of one dish, or None for a non-billable class."""
        e = self._entry(class_id)
        if e is None or not e.billable:
            return None
        return BillItem(class_id=class_id, key=self.class_names[class_id], name=e.name,
                        price=e.price, confidence=confidence, track_id=track_id,
                        needs_review=confidence < self.confirm_below or not e.enabled)

    def _entry(self, class_id: int) -> MenuEntry | None:
        if not 0 <= class_id < len(self.class_names):
            return None
        return self.entries.get(self.class_names[class_id])
