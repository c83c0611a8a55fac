"""Decoding an HTML page's bytes the way browsers do: the WHATWG Encoding Standard and HTML's encoding sniffing.

Order (HTML Standard, "determining the character encoding"): a byte-order mark wins; then the label of the HTTP
`Content-Type` charset; then a `<meta charset>` / `<meta http-equiv=content-type>` label near the top of the page;
only a page with no usable label at all is guessed (valid UTF-8, else charset_normalizer through trafilatura).
A declared encoding is used as declared: bytes invalid in it become U+FFFD, never a guess that garbles the page.
Labels map to encodings by the standard's table ("latin1", "iso-8859-1" and "ascii" are windows-1252, "x-sjis"
is Shift_JIS, ...), and each encoding decodes with the Python codec closest to the standard's decoder:
windows-1252 and the other windows-125x / 874 code pages map the bytes their tables leave open in 0x80-0x9F to
the C1 controls U+0080-U+009F, as the standard's indexes do; GBK decodes as gb18030, Big5 with HKSCS, Shift_JIS
as windows-31j and EUC-KR as windows-949, as the standard specifies.
"""

from __future__ import annotations

import codecs
import re

# WHATWG encoding name -> (Python codec, its labels). "replacement" and "x-user-defined" have no Python codec.
_ENCODINGS: dict[str, tuple[str, str]] = {
    "UTF-8": ("utf-8", "unicode-1-1-utf-8 unicode11utf8 unicode20utf8 utf-8 utf8 x-unicode20utf8"),
    "IBM866": ("cp866", "866 cp866 csibm866 ibm866"),
    "ISO-8859-2": ("iso8859_2", "csisolatin2 iso-8859-2 iso-ir-101 iso8859-2 iso88592 iso_8859-2 iso_8859-2:1987 l2 "
                                "latin2"),
    "ISO-8859-3": ("iso8859_3", "csisolatin3 iso-8859-3 iso-ir-109 iso8859-3 iso88593 iso_8859-3 iso_8859-3:1988 l3 "
                                "latin3"),
    "ISO-8859-4": ("iso8859_4", "csisolatin4 iso-8859-4 iso-ir-110 iso8859-4 iso88594 iso_8859-4 iso_8859-4:1988 l4 "
                                "latin4"),
    "ISO-8859-5": ("iso8859_5", "csisolatincyrillic cyrillic iso-8859-5 iso-ir-144 iso8859-5 iso88595 iso_8859-5 "
                                "iso_8859-5:1988"),
    "ISO-8859-6": ("iso8859_6", "arabic asmo-708 csiso88596e csiso88596i csisolatinarabic ecma-114 iso-8859-6 "
                                "iso-8859-6-e iso-8859-6-i iso-ir-127 iso8859-6 iso88596 iso_8859-6 iso_8859-6:1987"),
    "ISO-8859-7": ("iso8859_7", "csisolatingreek ecma-118 elot_928 greek greek8 iso-8859-7 iso-ir-126 iso8859-7 "
                                "iso88597 iso_8859-7 iso_8859-7:1987 sun_eu_greek"),
    "ISO-8859-8": ("iso8859_8", "csiso88598e csisolatinhebrew hebrew iso-8859-8 iso-8859-8-e iso-ir-138 iso8859-8 "
                                "iso88598 iso_8859-8 iso_8859-8:1988 visual"),
    "ISO-8859-8-I": ("iso8859_8", "csiso88598i iso-8859-8-i logical"),
    "ISO-8859-10": ("iso8859_10", "csisolatin6 iso-8859-10 iso-ir-157 iso8859-10 iso885910 l6 latin6"),
    "ISO-8859-13": ("iso8859_13", "iso-8859-13 iso8859-13 iso885913"),
    "ISO-8859-14": ("iso8859_14", "iso-8859-14 iso8859-14 iso885914"),
    "ISO-8859-15": ("iso8859_15", "csisolatin9 iso-8859-15 iso8859-15 iso885915 iso_8859-15 l9"),
    "ISO-8859-16": ("iso8859_16", "iso-8859-16"),
    "KOI8-R": ("koi8_r", "cskoi8r koi koi8 koi8-r koi8_r"),
    "KOI8-U": ("koi8_u", "koi8-ru koi8-u"),
    "macintosh": ("mac_roman", "csmacintosh mac macintosh x-mac-roman"),
    "windows-874": ("cp874", "dos-874 iso-8859-11 iso8859-11 iso885911 tis-620 windows-874"),
    "windows-1250": ("cp1250", "cp1250 windows-1250 x-cp1250"),
    "windows-1251": ("cp1251", "cp1251 windows-1251 x-cp1251"),
    "windows-1252": ("cp1252", "ansi_x3.4-1968 ascii cp1252 cp819 csisolatin1 ibm819 iso-8859-1 iso-ir-100 "
                               "iso8859-1 iso88591 iso_8859-1 iso_8859-1:1987 l1 latin1 us-ascii windows-1252 "
                               "x-cp1252"),
    "windows-1253": ("cp1253", "cp1253 windows-1253 x-cp1253"),
    "windows-1254": ("cp1254", "cp1254 csisolatin5 iso-8859-9 iso-ir-148 iso8859-9 iso88599 iso_8859-9 "
                               "iso_8859-9:1989 l5 latin5 windows-1254 x-cp1254"),
    "windows-1255": ("cp1255", "cp1255 windows-1255 x-cp1255"),
    "windows-1256": ("cp1256", "cp1256 windows-1256 x-cp1256"),
    "windows-1257": ("cp1257", "cp1257 windows-1257 x-cp1257"),
    "windows-1258": ("cp1258", "cp1258 windows-1258 x-cp1258"),
    "x-mac-cyrillic": ("mac_cyrillic", "x-mac-cyrillic x-mac-ukrainian"),
    "GBK": ("gb18030", "chinese csgb2312 csiso58gb231280 gb2312 gb_2312 gb_2312-80 gbk iso-ir-58 x-gbk"),
    "gb18030": ("gb18030", "gb18030"),
    "Big5": ("big5hkscs", "big5 big5-hkscs cn-big5 csbig5 x-x-big5"),
    "EUC-JP": ("euc_jp", "cseucpkdfmtjapanese euc-jp x-euc-jp"),
    "ISO-2022-JP": ("iso2022_jp", "csiso2022jp iso-2022-jp"),
    "Shift_JIS": ("cp932", "csshiftjis ms932 ms_kanji shift-jis shift_jis sjis windows-31j x-sjis"),
    "EUC-KR": ("cp949", "cseuckr csksc56011987 euc-kr iso-ir-149 korean ks_c_5601-1987 ks_c_5601-1989 ksc5601 "
                        "ksc_5601 windows-949"),
    "replacement": ("", "csiso2022kr hz-gb-2312 iso-2022-cn iso-2022-cn-ext iso-2022-kr replacement"),
    "UTF-16BE": ("utf-16-be", "unicodefffe utf-16be"),
    "UTF-16LE": ("utf-16-le", "csunicode iso-10646-ucs-2 ucs-2 unicode unicodefeff utf-16 utf-16le"),
    "x-user-defined": ("", "x-user-defined"),
}
LABELS = {label: name for name, (_, labels) in _ENCODINGS.items() for label in labels.split()}
_BOMS = ((codecs.BOM_UTF8, "UTF-8"), (codecs.BOM_UTF16_BE, "UTF-16BE"), (codecs.BOM_UTF16_LE, "UTF-16LE"))
_C1_OPEN = ("windows-874", "windows-1250", "windows-1251", "windows-1252", "windows-1253", "windows-1254",
            "windows-1255", "windows-1256", "windows-1257", "windows-1258")
_META_CHARSET = re.compile(rb"""<meta[^>]+charset\s*=\s*["']?\s*([^\s"';/>]+)""", re.IGNORECASE)
META_SCAN_BYTES = 4096  # the standard's prescan reads 1024; browsers also honour a later <meta> by re-decoding


def _c1_or_replace(err: UnicodeDecodeError) -> tuple[str, int]:
    """The windows code pages' open bytes 0x80-0x9F are the C1 controls in the standard's indexes; others U+FFFD."""
    byte = err.object[err.start]
    return (chr(byte) if 0x80 <= byte <= 0x9F else "\ufffd"), err.start + 1


codecs.register_error("webtext-whatwg-c1", _c1_or_replace)


def encoding_of(label: str | bytes | None) -> str | None:
    """The WHATWG encoding a label names (ASCII whitespace stripped, case ignored), or None for an unknown label."""
    if label is None:
        return None
    if isinstance(label, bytes):
        label = label.decode("latin-1")
    return LABELS.get(label.strip("\t\n\f\r \"'").lower())


def header_charset(content_type: str) -> str | None:
    """The encoding named by the `charset` parameter of a Content-Type header, if it names one."""
    for param in content_type.split(";")[1:]:
        key, _, value = param.partition("=")
        if key.strip().lower() == "charset":
            return encoding_of(value)
    return None


def meta_charset(body: bytes) -> str | None:
    """The first known encoding declared by a <meta> near the top of the page (UTF-16 there means UTF-8, and
    x-user-defined windows-1252, as the standard's prescan says)."""
    for match in _META_CHARSET.finditer(body[:META_SCAN_BYTES]):
        encoding = encoding_of(match.group(1))
        if encoding is not None:
            return {"UTF-16BE": "UTF-8", "UTF-16LE": "UTF-8", "x-user-defined": "windows-1252"}.get(encoding, encoding)
    return None


def decode(body: bytes, encoding: str) -> str:
    """`body` decoded as the WHATWG encoding `encoding`, invalid bytes as U+FFFD."""
    if encoding == "replacement":
        return "\ufffd" if body else ""
    if encoding == "x-user-defined":
        return "".join(chr(b) if b < 0x80 else chr(0xF780 + b - 0x80) for b in body)
    errors = "webtext-whatwg-c1" if encoding in _C1_OPEN else "replace"
    return body.decode(_ENCODINGS[encoding][0], errors)


def decode_html(body: bytes, content_type: str) -> str:
    """The page as text: byte-order mark, else the HTTP charset, else the <meta> charset, else a guess."""
    for bom, encoding in _BOMS:
        if body.startswith(bom):
            return decode(body[len(bom) :], encoding)
    encoding = header_charset(content_type) or meta_charset(body)
    if encoding is not None:
        return decode(body, encoding)
    try:  # no label at all: valid UTF-8 is UTF-8 (other encodings' non-ASCII text almost never is)
        return body.decode("utf-8")
    except UnicodeDecodeError:
        from trafilatura.utils import decode_file  # charset_normalizer's guesses, then UTF-8 with replacement

        return decode_file(body)
