"""Griffe extension for the API reference: Sphinx roles in docstrings become inline code.

The docstrings name other objects the Sphinx way (``:class:`~siamkit.gallery.Gallery```,
``:func:`fit```); mkdocstrings renders Markdown, where those roles would show literally. Each
role becomes inline code of its target (its last component when written with ``~``).
"""

from __future__ import annotations

import re
from typing import Any

from griffe import Extension

ROLE = re.compile(
    r":(?:class|func|meth|data|mod|attr|exc|obj|const):`(?P<short>~?)(?P<target>[^`]+)`"
)


def as_code(match: re.Match[str]) -> str:
    """``:class:`~a.b.C``` -> ```C```, ``:func:`a.f``` -> ```a.f```."""
    target = match["target"]
    return f"`{target.rsplit('.', 1)[-1] if match['short'] else target}`"


class SphinxRoles(Extension):
    """Rewrite the roles of every docstring when griffe loads the object."""

    def on_instance(self, *, obj: Any, **kwargs: Any) -> None:
        if obj.docstring is not None:
            obj.docstring.value = ROLE.sub(as_code, obj.docstring.value)
