"""WikiExtractor's clean text of one page, with the same output and less work.

`clean_paragraphs` is `wikiextractor.extract.Extractor.clean_text(text, mark_headers=True,
expand_templates=False, html_safe=False)` for the extract stage's settings: the steps of the
pinned wikiextractor's `clean()` in its order, through its own functions and patterns, each step
skipped when the text lacks the literal its pattern cannot match without ('{{', '[', '&', the
tag's name, ...). Why: `clean()` runs about 60 regular-expression passes over every page (a nested
drop and an orphan-close substitution for each of its 32 discarded tags, both halves of each of
its 25 ignored tags, the self-closing and placeholder tags), and on the benchmark dump nearly all
of them find nothing: they were most of the extract stage's time after decompression
(benchmarks/results/extract_speed.md). tests/test_extract.py holds this equal to `clean_text` on
every page of the demo dump, the zhwiki slice and random markup.
"""
import re

from wikiextractor import extract as wikiextractor

IGNORED_TAGS = [(tag, *wikiextractor.ignoreTag(tag)) for tag in wikiextractor.ignoredTags]
SELF_CLOSING = list(zip(wikiextractor.selfClosingTags, wikiextractor.selfClosing_tag_patterns))
DISCARDED = [(tag, r'''<\s*%s\b(?:(?=("[^"]*"|'[^']*'|[^>]))\1)*(?<!/)>''' % tag,
              re.compile(r'<\s*/\s*%s\s*>' % tag, re.IGNORECASE)) for tag in wikiextractor.discardElements]
PLACEHOLDERS = list(zip(wikiextractor.placeholder_tags, wikiextractor.placeholder_tag_patterns))
NOINCLUDE_OPEN = re.compile(r'<\s*noinclude\s*/?\s*>', re.IGNORECASE)
NOINCLUDE_CLOSE = re.compile(r'<\s*/\s*noinclude\s*>', re.IGNORECASE)
SPACE_BEFORE_CLOSING = re.compile(r' ([,:.\)\]»])')
SPACE_AFTER_OPENING = re.compile(r'([\[\(«]) ')
PUNCTUATION_LINE = re.compile(r'\n\W+?\n', re.U)
TAG_NAME = re.compile(r'<\s*/?\s*([A-Za-z\u0130\u0131\u017f\u212a]+)')


def extractor_for(urlbase):
    """The Extractor whose settings (links dropped, sections kept, no HTML) clean_paragraphs needs;
    one serves every page: the cleaning reads only those settings from it."""
    return wikiextractor.Extractor(0, None, urlbase, "", [], ignored_tag_patterns=[
        (left, right) for _, left, right in IGNORED_TAGS])


def clean_paragraphs(extractor, text):
    return wikiextractor.compact(clean(extractor, text), mark_headers=True, extractor=extractor)


def tag_names(text):
    """The names that follow '<', '</' or '< /' in text, lower-cased, so a tag pattern (its name
    right after such an opening, then a non-letter) can match only if its name is among them. The
    letters are those re.IGNORECASE matches to ASCII ones, 'İ', 'ı', 'ſ' and the Kelvin sign too.
    A set, because a substring test per tag over the whole page cost more than the passes saved."""
    return {name.lower().replace("i\u0307", "i").replace("ı", "i").replace("ſ", "s")
            for name in TAG_NAME.findall(text)}


def clean(extractor, text):
    """wikiextractor.extract.clean(extractor, text, expand_templates=False, html_safe=False)."""
    if "{{" in text:
        text = wikiextractor.dropNested(text, r'{{', r'}}')
    if "{|" in text:
        text = wikiextractor.dropNested(text, r'{\|', r'\|}')
    if "[" in text or wikiextractor.LINK_OPEN_PLACEHOLDER in text:
        text = wikiextractor.replaceExternalLinks(text, extractor)
        text = wikiextractor.replaceInternalLinks(text, extractor)
    if "__" in text:
        text = wikiextractor.magicWordsRE.sub('', text)
    text = unescape_outside_syntaxhighlight(text)
    text = drop_quotes(text)
    if "<" in text:
        text = drop_tags(extractor, text)
    if "&" in text:
        text = wikiextractor.unescape(text)
    if "<" in text:
        text = expand_placeholders(text)
    return tidy(text)


def unescape_outside_syntaxhighlight(text):
    if "&lt;syntaxhighlight " not in text:
        return wikiextractor.unescape(text) if "&" in text else text
    res, cur = '', 0
    for m in wikiextractor.syntaxhighlight.finditer(text):
        res += wikiextractor.unescape(text[cur:m.start()]) + m.group(1)
        cur = m.end()
    return res + wikiextractor.unescape(text[cur:])


def drop_quotes(text):
    if "''" in text:
        text = wikiextractor.bold_italic.sub(r'\1', text)
        text = wikiextractor.bold.sub(r'\1', text)
        text = wikiextractor.italic_quote.sub(r'"\1"', text)
        text = wikiextractor.italic.sub(r'"\1"', text)
    if '""' in text:
        text = wikiextractor.quote_quote.sub(r'"\1"', text)
    return text.replace("'''", '').replace("''", '"')


def drop_tags(extractor, text):
    text = wikiextractor.substituteLineBreakTag(wikiextractor.lineBreak_tag_pattern, text)
    text = wikiextractor.substituteLineBreakTag(wikiextractor.block_separator_tag_pattern, text, separator='\n')
    names = tag_names(text)
    spans = [m.span() for m in wikiextractor.comment.finditer(text)] if "<!--" in text else []
    for tag, pattern in SELF_CLOSING:
        if tag in names:
            spans += [m.span() for m in pattern.finditer(text)]
    for tag, left, right in IGNORED_TAGS:
        if tag in names:
            spans += [m.span() for m in left.finditer(text)]
            spans += [m.span() for m in right.finditer(text)]
    text = wikiextractor.dropSpans(spans, text)
    names = tag_names(text)
    for tag, open_pattern, close in DISCARDED:
        if tag in names:
            text = close.sub('', wikiextractor.dropNested(text, open_pattern, close.pattern))
            names = tag_names(text)
    if "noinclude" in names:
        text = NOINCLUDE_CLOSE.sub('', NOINCLUDE_OPEN.sub('', text))
    return text


def expand_placeholders(text):
    for tag, (pattern, placeholder) in PLACEHOLDERS:
        if tag in tag_names(text):
            for index, match in enumerate(pattern.finditer(text), 1):
                text = text.replace(match.group(), '%s_%d' % (placeholder, index))
    return text


def tidy(text):
    text = text.replace('<<', '«').replace('>>', '»').replace('\t', ' ')
    if "  " in text:
        text = wikiextractor.spaces.sub(' ', text)
    if "...." in text:
        text = wikiextractor.dots.sub('...', text)
    text = SPACE_BEFORE_CLOSING.sub(r'\1', text)
    text = SPACE_AFTER_OPENING.sub(r'\1', text)
    text = PUNCTUATION_LINE.sub('\n', text)
    return text.replace(',,', ',').replace(',.', '.')
