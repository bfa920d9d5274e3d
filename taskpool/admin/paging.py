"""A part of an admin page paged as the admin's changelists are: ``?p=``-like numbers.

A page may have several such parts (a thread's executions and its responses),
each with a query parameter of its own: a part's links keep the page the
others show, and go to the part itself (``#anchor``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from django.core.paginator import Page, Paginator
from django.http import HttpRequest


@dataclass(frozen=True, slots=True)
class PageLink:
    """One entry of a pager: a page number and its link, the current page, or an ellipsis."""

    label: str
    url: str | None
    current: bool = False


@dataclass(frozen=True, slots=True)
class PagedPart:
    """One page of a part, and its pager (empty when everything fits on one page)."""

    page: Page
    links: list[PageLink]

    @property
    def count(self) -> int:
        """How many rows the part has on all its pages."""
        return self.page.paginator.count


def paged_part(
    request: HttpRequest, rows: Sequence[Any], per_page: int, parameter: str, anchor: str
) -> PagedPart:
    """The page of ``rows`` that ``?<parameter>=`` asks for (the nearest one that exists,
    as ``Paginator.get_page``), with links to the others, as the admin's pagination."""
    paginator = Paginator(rows, per_page)
    page = paginator.get_page(request.GET.get(parameter))
    if paginator.num_pages == 1:
        return PagedPart(page, [])
    links = []
    for number in paginator.get_elided_page_range(page.number, on_each_side=2, on_ends=1):
        if number == page.number:
            links.append(PageLink(str(number), None, current=True))
        elif number == paginator.ELLIPSIS:
            links.append(PageLink(str(number), None))
        else:
            query = request.GET.copy()
            query[parameter] = str(number)
            links.append(PageLink(str(number), f"?{query.urlencode()}#{anchor}"))
    return PagedPart(page, links)
