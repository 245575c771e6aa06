"""filter_tools' `query` ranking: the Go muster's lexical BM25F over tool names and first description lines.

    score(doc) = sum over distinct query terms t of  idf(t) * w / (w + k1) * (k1 + 1)   (x 0.25 for list, get)
    w          = 3 * tf_name / (1 - b + b * len_name / avg_name) + 1 * tf_desc / (1 - b + b * len_desc / avg_desc)
    idf(t)     = ln(1 + (N - df + 0.5) / (df + 0.5)),  N and df over the candidates that passed the filters

`RankIndex` tokenises every tool once, when the catalog revision is built; a query only counts document
frequencies and averages over its candidates, which is a pass over cached integers. The terms of a query are
summed in the order they first occur (Go sums in map order, so its last bits vary from run to run; rounded to 4
decimals the scores agree).
"""

import math
import unicodedata
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

K1 = 1.5
B = 0.75
NAME_WEIGHT = 3.0
DESCRIPTION_WEIGHT = 1.0
STOP_VERBS = frozenset({"list", "get"})
STOP_VERB_WEIGHT = 0.25

# unicode.IsSpace: what Go's strings.TrimSpace removes.
_GO_SPACE = frozenset("\t\n\v\f\r \u0085\u00a0\u1680\u2028\u2029\u202f\u205f\u3000") | frozenset(
    chr(c) for c in range(0x2000, 0x200B)
)


def tokenize(text: str) -> list[str]:
    """Lowercase runs of letters and digits; camelCase splits where a lower-case letter meets an upper-case one."""
    tokens: list[str] = []
    current: list[str] = []
    previous = ""
    for char in text:
        category = unicodedata.category(char)
        if category[0] == "L":
            if category == "Lu" and previous and unicodedata.category(previous) == "Ll" and current:
                tokens.append("".join(current))
                current = []
            current.append(char.lower()[0])  # Go lowers one rune to one rune (İ -> i)
        elif category == "Nd":
            current.append(char)
        elif current:
            tokens.append("".join(current))
            current = []
        previous = char
    if current:
        tokens.append("".join(current))
    return tokens


def trim_space(text: str) -> str:
    start, end = 0, len(text)
    while start < end and text[start] in _GO_SPACE:
        start += 1
    while end > start and text[end - 1] in _GO_SPACE:
        end -= 1
    return text[start:end]


def first_line(description: str, max_runes: int = 0) -> str:
    """The first line, trimmed; capped at max_runes (then trimmed again and "..." added) when max_runes > 0."""
    line = trim_space(description.split("\n", 1)[0])
    if 0 < max_runes < len(line):
        line = trim_space(line[:max_runes]) + "..."
    return line


def round_score(score: float) -> float:
    """Four decimals, half away from zero as Go's math.Round; a positive score never rounds to 0."""
    scaled = score * 10000
    whole = math.trunc(scaled)
    if abs(scaled - whole) >= 0.5:
        whole += 1 if scaled > 0 else -1
    rounded = whole / 10000
    return 0.0001 if rounded == 0 and score > 0 else rounded


@dataclass(frozen=True, slots=True)
class _Doc:
    name_tf: dict[str, int]
    desc_tf: dict[str, int]
    name_len: int
    desc_len: int
    terms: frozenset[str]


class RankIndex:
    """The tokenised names and first description lines of one catalog revision's tools, in catalog order."""

    def __init__(self, tools: Iterable[tuple[str, str]]) -> None:
        docs: list[_Doc] = []
        for name, description in tools:
            name_terms = tokenize(name)
            desc_terms = tokenize(first_line(description))
            docs.append(
                _Doc(
                    Counter(name_terms),
                    Counter(desc_terms),
                    len(name_terms),
                    len(desc_terms),
                    frozenset(name_terms) | frozenset(desc_terms),
                )
            )
        self._docs = docs
        self._all = range(len(docs))
        self._all_df = Counter(term for doc in docs for term in doc.terms)
        self._all_name_len = sum(d.name_len for d in docs)
        self._all_desc_len = sum(d.desc_len for d in docs)

    def __len__(self) -> int:
        return len(self._docs)

    def rank(self, query: str, candidates: Sequence[int] | None = None) -> list[tuple[int, float]]:
        """(position, unrounded score) of the candidates that match, best first; ties keep candidate order."""
        terms = list(dict.fromkeys(tokenize(query)))
        positions: Sequence[int] = self._all if candidates is None else candidates
        if not terms or not positions:
            return []
        df, name_total, desc_total = self._counts(terms, candidates)
        n = len(positions)
        avg_name, avg_desc = name_total / n, desc_total / n
        idf = {t: math.log(1 + (n - df[t] + 0.5) / (df[t] + 0.5)) for t in terms}
        ranked: list[tuple[int, float]] = []
        for position in positions:
            doc = self._docs[position]
            if doc.terms.isdisjoint(terms):
                continue
            score = _score(doc, terms, idf, avg_name, avg_desc)
            if score > 0:
                ranked.append((position, score))
        ranked.sort(key=lambda item: -item[1])  # stable: equal scores keep catalog order
        return ranked

    def _counts(self, terms: list[str], candidates: Sequence[int] | None) -> tuple[dict[str, int], int, int]:
        """Document frequency of each term, and the total name and description lengths, over the candidates (over
        every tool, precomputed, when candidates is None)."""
        if candidates is None:
            return {t: self._all_df.get(t, 0) for t in terms}, self._all_name_len, self._all_desc_len
        df = dict.fromkeys(terms, 0)
        name_total = desc_total = 0
        for position in candidates:
            doc = self._docs[position]
            name_total += doc.name_len
            desc_total += doc.desc_len
            for term in terms:
                if term in doc.terms:
                    df[term] += 1
        return df, name_total, desc_total


def _score(doc: _Doc, terms: list[str], idf: dict[str, float], avg_name: float, avg_desc: float) -> float:
    """score(doc) of the module docstring, for one tool that shares a term with the query."""
    score = 0.0
    for term in terms:
        w = NAME_WEIGHT * _norm(doc.name_tf.get(term, 0), doc.name_len, avg_name) + DESCRIPTION_WEIGHT * _norm(
            doc.desc_tf.get(term, 0), doc.desc_len, avg_desc
        )
        if w == 0:
            continue
        contribution = idf[term] * w * (K1 + 1) / (w + K1)
        if term in STOP_VERBS:
            contribution *= STOP_VERB_WEIGHT
        score += contribution
    return score


def _norm(tf: int, length: int, average: float) -> float:
    if tf == 0 or average == 0:
        return 0.0
    return tf / (1 - B + B * length / average)
