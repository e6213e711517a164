"""Unicode normalisation of Chinese text, as the clean stage applies it to every document (and the
tokenizer benchmark to its novels). It is NFKC except for full-width punctuation: NFKC alone turns
，。！？：；（） into their ASCII forms and …… into ......, which is not how Chinese is written."""
import re
import unicodedata

# Full-width punctuation (U+FF01–FF65 minus letters and digits), the ellipsis and the ideographic
# full stop family: mapped to private-use code points that NFKC leaves alone, then mapped back.
FULL_WIDTH_PUNCTUATION = [c for c in map(chr, range(0xFF01, 0xFF66)) if not c.isalnum()] + ["…", "‥"]
PROTECT = {ord(c): 0xF0000 + i for i, c in enumerate(FULL_WIDTH_PUNCTUATION)}
RESTORE = {v: k for k, v in PROTECT.items()}
SPACES = re.compile(r"[ \t\u00a0\u3000]+")


def normalize(text):
    """NFKC that keeps full-width punctuation; runs of spaces folded; blank lines dropped."""
    text = unicodedata.normalize("NFKC", text.translate(PROTECT)).translate(RESTORE)
    lines = (SPACES.sub(" ", line).strip() for line in text.splitlines())
    return "\n".join(line for line in lines if line)
