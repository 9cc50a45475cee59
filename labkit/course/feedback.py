"""The grader's own pass over the feedback HTML a grading worker sends back.

The worker already asks nbconvert to sanitise learner HTML; :func:`sanitize_feedback` does it
again on the grader's side, because the feedback is shown on the instructor's origin (formgrader):
script elements dropped, then an allow-list of tags, attributes and link schemes (bleach).
"""

from __future__ import annotations

from typing import Any

__all__ = ["sanitize_feedback"]


_FEEDBACK_TAGS = frozenset(
    "a abbr b blockquote br caption code col colgroup dd del details div dl dt em figcaption figure "
    "h1 h2 h3 h4 h5 h6 hr i img ins kbd li main mark meta ol p pre s samp section small span strong "
    "style sub summary sup table tbody td tfoot th thead title tr u ul".split()
)


def _feedback_attribute(tag: str, name: str, value: str) -> bool:
    if name in (
        "class",
        "id",
        "title",
        "lang",
        "dir",
        "align",
        "colspan",
        "rowspan",
        "alt",
        "width",
        "height",
    ):
        return True
    if tag == "a" and name == "href":
        return value.startswith(("http://", "https://", "mailto:", "#"))
    if tag == "img" and name == "src":
        return value.startswith(("data:image/png;", "data:image/jpeg;", "data:image/gif;", "https://"))
    return tag == "meta" and name == "charset"


def sanitize_feedback(html: str) -> str:
    """Feedback HTML safe to show on the instructor's origin (formgrader): no script elements
    (learner ``<script>`` and nbconvert's own), no event handlers, no ``javascript:`` or
    ``data:`` links, only an allow-list of tags and attributes (bleach). The worker already asks
    nbconvert to sanitise learner HTML; this is the grader's own pass over what comes back.
    """
    from html.parser import HTMLParser

    import bleach

    class DropScripts(HTMLParser):
        def __init__(self) -> None:
            super().__init__(convert_charrefs=False)
            self.out: list[str] = []
            self.depth = 0

        def handle_starttag(self, tag: str, attrs: Any) -> None:
            if tag == "script":
                self.depth += 1
            elif not self.depth:
                self.out.append(self.get_starttag_text() or "")

        handle_startendtag = handle_starttag

        def handle_endtag(self, tag: str) -> None:
            if tag == "script":
                self.depth = max(0, self.depth - 1)
            elif not self.depth:
                self.out.append(f"</{tag}>")

        def handle_data(self, data: str) -> None:
            if not self.depth:
                self.out.append(data)

        def handle_entityref(self, name: str) -> None:
            self.handle_data(f"&{name};")

        def handle_charref(self, name: str) -> None:
            self.handle_data(f"&#{name};")

    parser = DropScripts()
    parser.feed(html)
    parser.close()
    cleaned: str = bleach.clean(
        "".join(parser.out),
        tags=_FEEDBACK_TAGS,
        attributes=_feedback_attribute,
        protocols={"http", "https", "mailto", "data"},
        strip=True,
        strip_comments=True,
    )
    return "<!DOCTYPE html>\n" + cleaned
