"""Text bodies as the lines they are compared by, and the signature that groups a line's differences (pure).

Lines: line endings (CRLF, CR, LF), trailing whitespace and trailing blank lines are no difference. HTML is
compared on the lines of its markup, not its source lines: whitespace runs collapse to one space, every tag is
written one way (names lower-cased, attributes sorted and double-quoted, no self-closing slash), and a line
starts before every block-level tag and ends after every block-level closing tag (and after `<br>`), so a page
served as one long line, or indented differently, still compares element by element (a table row, a paragraph);
inline markup (`<b>`, `<a>`, `<td>`) stays in its line.

Signature: the line with its volatile parts masked as `#` (numbers, hex runs of 8+, UUIDs, ISO and HTTP
timestamps, long mixed-case tokens such as CSRF nonces), so a footer "Queries took 0.53ms" is `text: "Queries took
#ms"` on every call, and the noise classifier learns it per signature as it learns a JSON field.
"""

from __future__ import annotations

import functools
import itertools
import re

from shadow.judge.normalize import media_type

HTML_TYPES = frozenset({"text/html", "application/xhtml+xml"})
MAX_SIGNATURE_CHARS = 120  # characters of masked line text kept in a signature
SIGNATURE_PREFIX = "text: "
# fmt: off
BLOCK_TAGS = frozenset({
    "address", "article", "aside", "blockquote", "body", "caption", "dd", "details", "dialog", "div", "dl", "dt",
    "fieldset", "figcaption", "figure", "footer", "form", "h1", "h2", "h3", "h4", "h5", "h6", "head", "header",
    "hgroup", "hr", "html", "iframe", "legend", "li", "link", "main", "menu", "meta", "nav", "noscript", "ol",
    "optgroup", "option", "p", "pre", "script", "section", "select", "style", "summary", "table", "tbody",
    "template", "textarea", "tfoot", "thead", "title", "tr", "ul",
})
# fmt: on
_LINE_BREAK_TAGS = frozenset({"br"})  # void tags after which a line ends

_TAG = re.compile(r"<(/?)([A-Za-z][A-Za-z0-9:-]*)([^<>]*)>")  # [^<>]: linear on markup left unclosed
# One attribute and the space before it: name, then a double-quoted, single-quoted or bare value, or none.
_ATTR = re.compile(
    r"""\s+(?P<name>[^\s"'=<>/]+)(?:\s*=\s*(?:"(?P<dq>[^"]*)"|'(?P<sq>[^']*)'|(?P<bare>[^\s"'=<>`]+)))?"""
)
_SPACE = re.compile(r"\s+")
_VOLATILE = re.compile(
    r"(?P<tag></?[A-Za-z][A-Za-z0-9:-]*)"  # tag names keep their digits: <h1>, </h2>
    r"|\d{4}-\d{2}-\d{2}(?:[T ]\d{2}:\d{2}(?::\d{2}(?:[.,]\d+)?)?(?:\s?(?:Z|UTC|GMT|[+-]\d{2}:?\d{2}))?)?"
    r"|(?:Mon|Tue|Wed|Thu|Fri|Sat|Sun), \d{1,2} [A-Z][a-z]{2} \d{4} \d{2}:\d{2}:\d{2} GMT"
    r"|[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}"
    r"|(?<![0-9A-Za-z])(?:0x)?[0-9a-fA-F]{8,}(?![0-9A-Za-z])"
    # Nonces and tokens: 20+ characters of base64(url) with a digit, a lower- and an upper-case letter.
    r"|(?<![A-Za-z0-9+/_-])(?=[A-Za-z0-9+/_-]*\d)(?=[A-Za-z0-9+/_-]*[a-z])(?=[A-Za-z0-9+/_-]*[A-Z])"
    r"[A-Za-z0-9+/_-]{20,}={0,2}"
    r"|\d+(?:[.,:]\d+)*"
)


def is_html(content_type: str | None) -> bool:
    """Whether a body of this Content-Type is compared on the lines of its markup (`html_lines`)."""
    return media_type(content_type) in HTML_TYPES


def text_lines(text: str, *, html: bool, respell: bool = True) -> list[str]:
    """The lines a text body is compared by: `html_lines` for HTML, else its lines without trailing whitespace.
    `respell=False`: HTML tags as written (`respelled` does the rest for the lines that need it)."""
    if html:
        return html_lines(text, respell=respell)
    return [line.rstrip() for line in text.rstrip().splitlines()]


def html_lines(text: str, *, respell: bool = True) -> list[str]:
    """HTML markup as lines: whitespace collapsed, tags written one way (`respelled`; as written with
    `respell=False`), one line per block-level element (see the module docstring)."""
    flat = _SPACE.sub(" ", text)
    cuts = [0]
    for tag in _TAG.finditer(flat):
        name = tag[2].lower()
        if name in _LINE_BREAK_TAGS or (tag[1] and name in BLOCK_TAGS):
            cuts.append(tag.end())
        elif name in BLOCK_TAGS:
            cuts.append(tag.start())
    cuts.append(len(flat))
    pieces = (flat[start:end].strip() for start, end in itertools.pairwise(cuts))
    lines = [piece for piece in pieces if piece]
    return respelled(lines, {}) if respell else lines


def respelled(lines: list[str], done: dict[str, str]) -> list[str]:
    """HTML lines with every tag written one way (`_canonical_tag`). Cuts fall between tags, so a line is respelled
    whole and alone; `done` keeps the lines already respelled, for the other page of a pair."""
    out = []
    for line in lines:
        spelled = done.get(line)
        if spelled is None:
            spelled = done[line] = _TAG.sub(_spelled, line)
        out.append(spelled)
    return out


def _spelled(tag: re.Match[str]) -> str:
    whole = tag[0]
    if len(whole) <= 2 + len(tag[1]) + len(tag[2]) and whole.islower():
        return whole  # `<td>`, `</p>`: nothing to respell
    return _canonical(whole)


@functools.lru_cache(maxsize=8192)
def _canonical(whole: str) -> str:
    """`_canonical_tag` by the tag's text, cached: the two pages of a pair share most tags, and a page repeats its
    own (a 165 KB page of 6,000 tags took 18 ms to respell without it)."""
    tag = _TAG.fullmatch(whole)
    assert tag is not None  # whole is a match of _TAG
    return _canonical_tag(tag)


def _canonical_tag(tag: re.Match[str]) -> str:
    """A tag as one spelling of its DOM: the name and attribute names lower-cased, the attributes sorted by name,
    each value in double quotes, no self-closing slash (`<P ID=y class='x'/>` is `<p class="x" id="y">`).
    Template engines differ on these when an app is ported; the page they render does not. A tag whose attributes
    this cannot read whole is kept as it is."""
    attrs = tag[3]
    if not attrs.strip(" /"):  # no attributes; a self-closing slash is nothing in HTML (`<br/>` is `<br>`)
        return f"<{tag[1]}{tag[2].lower()}>"
    pairs = []
    at = 0
    for found in _ATTR.finditer(attrs):
        if found.start() != at:
            return tag[0]  # something between attributes this does not read: leave the tag alone
        at = found.end()
        value = found["dq"] if found["dq"] is not None else found["sq"] if found["sq"] is not None else found["bare"]
        name = found["name"].lower()
        pairs.append(name if value is None else f'{name}="{value.replace(chr(34), "&quot;")}"')
    rest = attrs[at:].strip()
    if rest not in ("", "/"):
        return tag[0]
    return f"<{tag[1]}{tag[2].lower()} {' '.join(sorted(pairs))}>"


def _mask(match: re.Match[str]) -> str:
    return match[0] if match["tag"] else "#"


def line_signature(line: str) -> str:
    """The grouped path of a line's difference: `text: "<the line, volatile parts masked, spaces collapsed>"`."""
    masked = _SPACE.sub(" ", _VOLATILE.sub(_mask, line)).strip()
    if len(masked) > MAX_SIGNATURE_CHARS:
        masked = masked[: MAX_SIGNATURE_CHARS - 1] + "…"
    return f'{SIGNATURE_PREFIX}"{masked}"'
