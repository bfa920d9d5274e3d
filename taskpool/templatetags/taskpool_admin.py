"""Template filters of the pool's admin pages."""

from __future__ import annotations

from django import template
from django.utils.html import conditional_escape, format_html, format_html_join
from django.utils.safestring import SafeString, mark_safe

from taskpool.exceptions import InvalidMessage
from taskpool.messages import parse_address

register = template.Library()


@register.filter
def address(text: str) -> SafeString:
    """An address with each device id kept whole: a narrow column breaks between ids only."""
    try:
        parsed = parse_address(text)
    except InvalidMessage:
        return conditional_escape(text)
    if parsed.kind == "user":
        name, at, domain = parsed.user.rpartition("@")
        if at:  # an email may break before its domain
            return format_html(
                'user:<span class="taskpool-id">{}</span><wbr><span class="taskpool-id">@{}</span>',
                name,
                domain,
            )
    if parsed.kind != "device" or parsed.everyone:
        return format_html('<span class="taskpool-id">{}</span>', str(parsed))
    ids = format_html_join(
        mark_safe(",<wbr>"),
        '<span class="taskpool-id">{}</span>',
        ((i,) for i in parsed.device_ids),
    )
    if parsed.is_list:
        return format_html("device:[{}]", ids)
    return format_html("device:{}", ids)
