"""The footer of keys, redrawn only when the keys it shows change."""

from __future__ import annotations

from textual.screen import Screen
from textual.widgets import Footer


class KeyFooter(Footer):
    """Textual's footer, minus the rebuilds that change nothing.

    The footer rebuilds all its keys (new widgets, styles, layout) each time a
    screen refreshes its bindings: on every focus change and screen switch,
    and from the Train screen as a run changes state. Most of those leave the
    keys as they were; this one rebuilds only when what it would show differs.
    """

    def __init__(self, **kwargs) -> None:
        super().__init__(**kwargs)
        self._shown: tuple | None = None

    def bindings_changed(self, screen: Screen) -> None:
        shown = tuple(
            (binding.key, binding.action, binding.description, binding.show, enabled, tooltip)
            for _, binding, enabled, tooltip in screen.active_bindings.values()
        )
        if shown != self._shown or not self.children:
            self._shown = shown
            super().bindings_changed(screen)
