"""Whether a reply names an answer, as a reader would judge it: what the fact probe's
`generated_accuracy` counts and what GRPO's `exact_answer` reward pays for."""
import opencc

from workflow_scripts.lib.corpus.text_normalization import normalize

TO_SIMPLIFIED = opencc.OpenCC("t2s")


def plain(text):
    """Text as compared: NFKC (full-width letters and digits), traditional characters simplified."""
    return TO_SIMPLIFIED.convert(normalize(text))


def names_only(reply, answer, candidates=()):
    """Whether the reply names the answer and none of its rivals (`candidates`, which may hold the
    answer itself), all normalised."""
    named = {c for c in {answer, *candidates} if plain(c) in plain(reply)}
    return named == {answer}
