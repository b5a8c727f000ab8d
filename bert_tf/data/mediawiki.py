"""MediaWiki dumps -> article prose: streaming the XML of a `pages-articles` dump (`.xml`,
`.bz2` (multistream too) or `.gz`) and turning an article's wikitext into plain paragraphs.

What is kept is decided here (WikiExtractor is AGPL and is not used). Constructs that are
dropped anyway are cut first with regular expressions, which is most of the speed: comments and
`<ref>`s (they never nest), then templates, tables and links, innermost first until none is
left. `mwparserfromhell` (a maintained parser, MIT) then parses what remains, node by node:
  kept       text, the visible text of internal links (`[[target|text]]` -> text, the pipe
             trick), the label of external links, formatting tags' contents, HTML entities
             (decoded), quantities from `{{convert}}`, `{{val}}`, `{{frac}}` ("15 km") and the
             text of wrappers such as `{{lang}}`, `{{nowrap}}` (see `_template_text`);
  removed    every other template (infoboxes, citations, navigation), `<ref>`s and other
             invisible tags, tables, galleries, comments, file/image/category and
             interlanguage links, magic words;
  dropped    headings (a heading ends a paragraph and is never a line), list, definition-list
             and preformatted lines, short label lines (a bold name above a list), the sections
             that hold no prose ("See also", "References", ...), and every sentence that held a
             formula or code (`<math>`, `<chem>`, `<code>`, ...): WikiExtractor turns those into
             `formula_N`/`codice_N` placeholders inside sentences; here the sentence goes, and
             the summary counts it.
"""

from __future__ import annotations

import bz2
import gzip
import html
import re
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from typing import Callable, Iterator

from bert_tf.data.glue import DataError

# A private-use character marks, inside a paragraph, where a formula or code was cut out: the
# sentence that holds it is dropped after sentence splitting.
FORMULA_MARK = "\ue000"
_LIST_MARK = "\ue001"  # a list / definition-list line: the whole line is dropped
_HEADING_MARK = "\ue002"  # a heading: ends the paragraph, never written
_PRE_MARK = "\ue003"  # a line that starts with a space: preformatted (code, pseudo-code)
_PREFORMATTED = re.compile(r"(?m)^ (?=\S)")
# Cut before parsing, as they never nest and hold most of an article's templates (citations):
# parsing them only to drop them was most of the time.
_REF_ATTRS = r"""(?:[^>"'/]|"[^"]*"|'[^']*'|/(?!>))*"""  # quoted values may hold "/" or ">"
_REFS_AND_COMMENTS = re.compile(
    r"<!--.*?(?:-->|$)"  # a comment (an unclosed one runs to the end, as MediaWiki reads it)
    rf"|<ref\b{_REF_ATTRS}/>"  # <ref name="a/b"/>
    rf"|<ref\b{_REF_ATTRS}>(?:(?!<ref\b).)*?</ref\s*>",  # never across another <ref
    re.DOTALL | re.IGNORECASE)
# Innermost templates, tables and links, replaced repeatedly until none is left (they nest):
# building their parse trees only to drop or flatten them was most of what remained.
_INNER_TEMPLATE = re.compile(r"\{\{(?:[^{}]|\{(?!\{)|\}(?!\}))*?\}\}")
_INNER_LINK = re.compile(r"\[\[([^\[\]]*)\]\]")
_INNER_TABLE = re.compile(r"(?m)^[ \t:]*\{\|(?:(?!^[ \t:]*\{\|).)*?^[ \t]*\|\}", re.DOTALL)

_INVISIBLE_TAGS = frozenset({
    "ref", "references", "gallery", "imagemap", "timeline", "score", "graph", "mapframe",
    "maplink", "templatedata", "templatestyles", "categorytree", "inputbox", "section", "noinclude",
    "includeonly", "onlyinclude", "indicator", "nowiki", "table", "hiero", "poem", "blockquote",
})
_FORMULA_TAGS = frozenset({"math", "chem", "ce", "code", "syntaxhighlight", "source", "pre", "tt",
                           "var", "kbd", "samp"})
_LIST_TAGS = frozenset({"li", "dt", "dd"})
_BREAK_TAGS = frozenset({"br", "hr", "p", "div"})
# Sections of an article that hold lists of links and references, not prose (lower case).
SKIPPED_SECTIONS = frozenset({
    "see also", "references", "external links", "further reading", "notes", "bibliography",
    "sources", "footnotes", "citations", "works cited", "notes and references",
    "references and notes", "external link", "reference", "literature", "publications",
    "works", "discography", "filmography", "gallery",
})
# Link namespaces whose links are not text: files, categories, and any other `Prefix:` link
# with a leading colon-free namespace (interlanguage links such as `fr:Albedo` included).
_MEDIA_PREFIXES = frozenset({"file", "image", "media", "category", "wikt", "wiktionary", "s",
                             "commons", "wikipedia", "wp", "template", "help", "portal", "user",
                             "special", "talk", "draft", "module", "mediawiki"})
_LANGUAGE_LINK = re.compile(r"[a-z]{2,3}(-[a-z]{2,8})*$")


@dataclass
class Page:
    """One `<page>` of a dump: `namespace` 0 is an article; `redirect` names its target."""
    title: str
    namespace: int
    redirect: str | None
    text: str
    offset: int  # bytes of the (decompressed) XML read when the page ended


class _Utf8Replacing:
    """Incremental UTF-8 decoding that replaces invalid bytes with U+FFFD, counting them and
    remembering the byte offset of the first (in the decompressed stream). A sequence split
    between two chunks waits for the next one."""

    def __init__(self, path: str, stats: dict):
        self.path, self.stats, self.base, self.pending = path, stats, 0, b""

    def decode(self, data: bytes, final: bool = False) -> str:
        data = self.pending + data
        cut = len(data) if final else complete_utf8_prefix(data)
        self.pending = data[cut:]
        text = replace_invalid_utf8(data[:cut], self.path, self.base, self.stats)
        self.base += cut
        return text


def complete_utf8_prefix(data: bytes) -> int:
    """The length of `data` without a UTF-8 sequence cut short at its end (at most 3 bytes)."""
    for back in range(1, min(4, len(data)) + 1):
        byte = data[-back]
        if byte & 0xC0 != 0x80:  # a lead byte (or ASCII)
            need = 2 if byte & 0xE0 == 0xC0 else 3 if byte & 0xF0 == 0xE0 else \
                4 if byte & 0xF8 == 0xF0 else 1
            return len(data) - back if need > back else len(data)
    return len(data)


def replace_invalid_utf8(data: bytes, path: str, base: int, stats: dict) -> str:
    """`data` decoded as UTF-8 with each invalid byte run replaced by U+FFFD; counts them in
    `stats["invalid_utf8_bytes"]` and records the first as `stats["first_invalid_utf8"]`
    (`path:byte offset`, where `base` is the offset of `data` in the file)."""
    parts, start = [], 0
    while True:
        try:
            parts.append(data[start:].decode("utf-8"))
            break
        except UnicodeDecodeError as error:
            parts.append(data[start:start + error.start].decode("utf-8"))
            bad = max(error.end - error.start, 1)
            stats["invalid_utf8_bytes"] = stats.get("invalid_utf8_bytes", 0) + bad
            stats.setdefault("first_invalid_utf8", f"{path}: byte {base + start + error.start}")
            parts.append("\ufffd")
            start += error.end
    return "".join(parts)


def _local(tag: str) -> str:
    return tag.rsplit("}", 1)[-1]


def read_dump(path: str, stats: dict, progress: Callable[[int], None] | None = None,
              chunk_bytes: int = 1 << 20) -> Iterator[Page]:
    """The pages of a MediaWiki XML dump, streamed: memory holds one page, whatever the dump.

    `path` ends in `.bz2` (decompressed on the fly; multistream dumps work) or is plain XML.
    Invalid UTF-8 is replaced and counted in `stats` (see `replace_invalid_utf8`).
    `progress(n)` is called with the bytes read from disk since the last call.
    Raises DataError naming the file for: a file that is not XML, XML whose root is not
    `<mediawiki>`, a truncated or corrupt `.bz2`, XML cut short.
    """
    raw = open(path, "rb")
    stream = bz2.BZ2File(raw) if path.endswith(".bz2") else \
        gzip.GzipFile(fileobj=raw) if path.endswith(".gz") else raw
    decoder = _Utf8Replacing(path, stats)
    parser = ET.XMLPullParser(events=("start", "end"))
    root = None
    depth = 0
    seen_disk = 0
    try:
        while True:
            try:
                data = stream.read(chunk_bytes)
            except EOFError:
                raise DataError(f"{path}: the compressed file is truncated (it ends before the end "
                                "of its compressed stream); download it again") from None
            except OSError as error:
                raise DataError(f"{path}: not a valid compressed file ({error}); download it "
                                "again or pass the uncompressed XML") from None
            if progress is not None:
                position = raw.tell()
                progress(position - seen_disk)
                seen_disk = position
            try:
                parser.feed(decoder.decode(data, final=not data))
                if not data:
                    parser.close()
                for event, element in parser.read_events():
                    if event == "start":
                        depth += 1
                        if root is None:
                            root = element
                            if _local(element.tag) != "mediawiki":
                                raise DataError(
                                    f"{path}: not a MediaWiki XML dump (its root element is "
                                    f"<{_local(element.tag)}>, not <mediawiki>); pass a "
                                    "pages-articles dump (.xml or .xml.bz2), or --input_format "
                                    "for other files")
                        continue
                    depth -= 1
                    if _local(element.tag) == "page" and depth == 1:
                        yield _page(element, decoder.base)
                        root.clear()  # drop the finished page: memory stays one page
            except ET.ParseError as error:
                line, column = error.position
                what = ("ends before its XML is complete (a truncated download?)"
                        if not data else f"is not well-formed XML at line {line}, column "
                        f"{column} ({error.msg if hasattr(error, 'msg') else error})")
                if root is None:
                    what = "is not XML (a MediaWiki dump is XML, .xml or .xml.bz2)"
                raise DataError(f"{path}: {what}") from None
            if not data:
                break
        if root is None:
            raise DataError(f"{path}: no XML in the file (is it empty?)")
    finally:
        stream.close()
        raw.close()


def _page(element, offset: int) -> Page:
    title, namespace, redirect, text = "", 0, None, ""
    for child in element:
        name = _local(child.tag)
        if name == "title":
            title = child.text or ""
        elif name == "ns":
            try:
                namespace = int(child.text or 0)
            except ValueError:
                namespace = -1
        elif name == "redirect":
            redirect = child.get("title", "")
        elif name == "revision":
            for part in child:
                if _local(part.tag) == "text":
                    text = part.text or ""
    if redirect is None and re.match(r"\s*#redirect\b", text, re.IGNORECASE):
        redirect = ""  # old dumps mark redirects only in the text
    return Page(title, namespace, redirect, text, offset)


# ---- Wikitext -> paragraphs -----------------------------------------------------------------

def article_paragraphs(wikitext: str, counts: dict | None = None) -> list[str]:
    """The prose paragraphs of one article's wikitext, whitespace collapsed, in order.

    Paragraphs may hold `FORMULA_MARK` where a formula or code was cut out (the caller drops
    the sentence around it). `counts` (if given) gains `headings`, `list_lines`, `tables` and
    `skipped_sections`. See the module docstring for what is kept.
    """
    import mwparserfromhell

    counts = {} if counts is None else counts
    out: list[str] = []
    # A line that starts with a space is preformatted text (MediaWiki renders it as <pre>):
    # marked before parsing, so that a template spanning such lines still parses.
    wikitext = _REFS_AND_COMMENTS.sub("", _PREFORMATTED.sub(_PRE_MARK, wikitext))
    wikitext = _cut_nested(_INNER_TEMPLATE, wikitext, _template_text, counts, None)
    wikitext = _cut_nested(_INNER_TABLE, wikitext, "\n", counts, "tables")
    wikitext = _cut_nested(_INNER_LINK, wikitext, _link_text, counts, None)
    _render(mwparserfromhell.parse(wikitext, skip_style_tags=True).nodes, out, counts)
    text = "".join(out)
    paragraphs: list[str] = []
    lines: list[str] = []  # MediaWiki joins consecutive lines into one paragraph

    def end_paragraph():
        paragraph = _tidy(" ".join(lines))
        lines.clear()
        if paragraph and _is_label(paragraph):
            counts["label_lines"] = counts.get("label_lines", 0) + 1
        elif paragraph:
            paragraphs.append(paragraph)

    skip_level = 0
    for line in text.split("\n"):
        if line.startswith(_HEADING_MARK):
            end_paragraph()
            level, title = line[1:].split(_HEADING_MARK, 1)
            counts["headings"] = counts.get("headings", 0) + 1
            if skip_level and int(level) > skip_level:
                continue
            skip_level = 0
            if title.strip().lower() in SKIPPED_SECTIONS:
                skip_level = int(level)
                counts["skipped_sections"] = counts.get("skipped_sections", 0) + 1
        elif skip_level:
            continue
        elif line.lstrip().startswith(_LIST_MARK):
            end_paragraph()
            counts["list_lines"] = counts.get("list_lines", 0) + 1
        elif line.startswith(_PRE_MARK):
            end_paragraph()
            counts["preformatted_lines"] = counts.get("preformatted_lines", 0) + 1
        elif not line.strip():
            end_paragraph()
        else:
            lines.append(line.replace(_PRE_MARK, " "))
    end_paragraph()
    return paragraphs


def _link_shows(target: str, text: str | None) -> str:
    """What a link `[[target|text]]` shows: its text, else the target (the pipe trick and
    `[[target]]`); "" for file, category, interlanguage and other namespace links."""
    target = target.strip()
    if ":" in target and not target.startswith(":"):
        prefix = target.split(":", 1)[0].strip().lower()
        if prefix in _MEDIA_PREFIXES or _LANGUAGE_LINK.fullmatch(prefix):
            return ""
    if text:
        return text
    target = target.lstrip(":")
    return target.split("#", 1)[0] or target


def _link_text(match) -> str:
    target, _, text = match.group(1).partition("|")
    return _link_shows(target, text.rsplit("|", 1)[-1] if text else None)


_RANGE_WORDS = frozenset({"to", "-", "–", "and", "or", "x", "×", "by", "+/-", "±"})
_UNITS = {"c": "°C", "f": "°F", "k": "K"}
_TEXT_TEMPLATES = frozenset({"convert", "cvt", "val", "frac", "nowrap", "nobr", "small",
                             "smaller", "big", "abbr", "sic", "ill", "lang", "transl"})


def _template_text(match) -> str:
    """The text an inline template stands for when it is part of a sentence: quantities
    ({{convert|15|km}} -> "15 km", {{val|1.5|u=m}}, {{frac|1|2}} -> "1/2") and wrappers of
    plain text ({{nowrap|...}}, {{lang|fr|...}}, {{transl|...}}, ...). Every other template
    (infoboxes, citations, navigation) stands for nothing here. Dropping quantities left
    sentences with holes ("lengths of when its tail is")."""
    inner = match.group(0)[2:-2]
    bar = inner.find("|")
    name = (inner if bar < 0 else inner[:bar]).strip().lower()
    if name not in _TEXT_TEMPLATES and not name.startswith("lang-"):
        return ""  # most templates: nothing to split
    if "[[" in inner:  # a link's pipe would split wrongly; rare here
        return ""
    params = [p.strip() for p in inner.split("|")[1:]]
    positional = [p for p in params if "=" not in p]
    named = dict(p.split("=", 1) for p in params if "=" in p)
    if name in ("convert", "cvt") and positional:
        words = [positional[0]]
        for value in positional[1:]:
            words.append(value)
            if value.lower() not in _RANGE_WORDS and not words[-2].lower() in _RANGE_WORDS:
                break
        if len(words) > 1:
            words[-1] = _UNITS.get(words[-1].lower(), words[-1])
        return " ".join(words)
    if name == "val" and positional:
        unit = named.get("u", named.get("ul", "")).strip()
        return f"{positional[0]} {unit}".strip()
    if name == "frac" and positional:
        return (f"{positional[0]} " if len(positional) == 3 else "") + "/".join(positional[-2:])
    if name in ("nowrap", "nobr", "small", "smaller", "big", "abbr", "sic", "ill", "lang") \
            and positional:
        return positional[-1] if name == "lang" else positional[0]
    if (name.startswith("lang-") or name == "transl") and positional:
        return positional[-1]
    return ""


def _cut_nested(pattern, text: str, replacement, counts: dict, name: str | None) -> str:
    """`text` with every match of `pattern` removed, innermost first, until none is left."""
    while True:
        text, n = pattern.subn(replacement, text)
        if name and n:
            counts[name] = counts.get(name, 0) + n
        if not n:
            return text


def _is_label(paragraph: str) -> bool:
    """A short line that does not end like a sentence: a bold pseudo-heading above a list
    (`'''Pennsylvania'''`), a caption, a lone magic word. Fewer than 6 words and no final
    punctuation."""
    return len(paragraph.split()) < 6 and not paragraph.rstrip("\"'\u201d)]").endswith(
        (".", "!", "?", ":", ";"))


_OPEN_THEN_SEPARATORS = re.compile(r"\(\s*([,;]\s*)+")
_SEPARATORS_THEN_CLOSE = re.compile(r"(\s*[,;])+\s*\)")
_EMPTY_BRACKETS = re.compile(r"\(\s*[,;:]?\s*\)|\[\s*\]")
_SPACE_BEFORE_PUNCT = re.compile(r"\s+([,.;:!?])")
_SPACES = re.compile(r"[ \t\u00a0\u2009\u202f]+")
_LEFTOVER_MARKUP = re.compile(r"^\s*(\{\||\|\}|\|-|\||!)|\{\{|\}\}|\[\[|\]\]")
_BOLD_ITALIC = re.compile(r"''+")  # parsed with skip_style_tags: quote runs stay as text
_MAGIC_WORD = re.compile(r"__[A-Z]+__")  # __TOC__, __NOTOC__, ...


def _tidy(line: str) -> str:
    """Collapses whitespace and removes what removed markup leaves behind: empty brackets, a
    space before punctuation. A line that still starts like table markup is dropped ("")."""
    line = _SPACES.sub(" ", html.unescape(line)).strip()  # entities inside template output
    if not line or _LEFTOVER_MARKUP.search(line):
        return ""
    # Each substitution runs only where its pattern can match (most lines hold none of these
    # characters: the checks cost far less than the regexes, a fifth of a dump's cleaning).
    if "__" in line:
        line = _MAGIC_WORD.sub("", line)
    if "''" in line:
        line = _BOLD_ITALIC.sub("", line)
    if "(" in line:
        line = _OPEN_THEN_SEPARATORS.sub("(", line)
    if ")" in line:  # "(text; )": what was cut left its separator
        line = _SEPARATORS_THEN_CLOSE.sub(")", line)
    if "(" in line or "[" in line:
        line = _EMPTY_BRACKETS.sub("", line)  # after the collapse above: "(; )" -> "()" -> ""
    if "  " in line:  # removals above can leave two spaces side by side, nothing else
        line = _SPACES.sub(" ", line)
    return _SPACE_BEFORE_PUNCT.sub(r"\1", line).strip()


def _render(nodes, out: list[str], counts: dict) -> None:
    from mwparserfromhell import nodes as n

    for node in nodes:
        if isinstance(node, n.Text):
            out.append(node.value)
        elif isinstance(node, n.Wikilink):  # the few the regex left (brackets in the text)
            title = str(node.title)
            if not _link_shows(title, "text"):
                continue
            if node.text is not None:
                _render(node.text.nodes, out, counts)
            else:
                out.append(_link_shows(title, None))
        elif isinstance(node, n.ExternalLink):
            if node.title is not None:
                _render(node.title.nodes, out, counts)
        elif isinstance(node, n.Tag):
            _render_tag(node, out, counts)
        elif isinstance(node, n.Heading):
            title = node.title.strip_code().strip()
            out.append(f"\n{_HEADING_MARK}{node.level}{_HEADING_MARK}{title}\n")
        elif isinstance(node, n.HTMLEntity):
            out.append(node.normalize())
        # Templates, comments, arguments: removed.


def _render_tag(node, out: list[str], counts: dict) -> None:
    tag = str(node.tag).strip().lower()
    if tag in _LIST_TAGS:
        out.append(_LIST_MARK)
    elif tag in _FORMULA_TAGS:
        counts["formulas"] = counts.get("formulas", 0) + 1
        out.append(FORMULA_MARK)
    elif tag in _INVISIBLE_TAGS:
        if tag == "table":
            counts["tables"] = counts.get("tables", 0) + 1
            out.append("\n")  # a table stands apart from the paragraphs around it
    elif tag in _BREAK_TAGS:
        out.append(" " if tag == "br" else "\n")
        if node.contents is not None and not node.self_closing:
            _render(node.contents.nodes, out, counts)
            out.append("\n")
    elif node.contents is not None and not node.self_closing:
        _render(node.contents.nodes, out, counts)
