#!/usr/bin/env python3
"""Check notices as a receiving mail system would, with Python's own email
package: a MIME parser nobody on oshirase wrote.

    python3 scripts/checkmail.py notice1.eml notice2.eml ...

Prints, as JSON, one object per file: the decoded headers and parts, and
"problems", every way the message falls short of what a notice must be:

- the parser's defects (message, headers, parts);
- not multipart/alternative with a text/plain then a text/html part;
- Date, From, To, Subject, Message-ID, MIME-Version or Auto-Submitted
  missing or repeated;
- an encoded-word in a subject that is plain ASCII;
- a line over 998 octets, a bare CR or LF, a byte outside 7-bit ASCII
  outside a part declared 8bit;
- an ISO-2022-JP part that is not 7bit (RFC 1468), has a line not back in
  ASCII at its end, or does not decode strictly;
- a part whose charset is not what --charset says (when given).

Exit status: 0 when no file has a problem, 1 otherwise, 2 on bad usage.
"""
import argparse
import email
import email.policy
import json
import re
import sys

SINGLE = ("Date", "From", "To", "Subject", "Message-ID", "MIME-Version", "Auto-Submitted")
ENCODED_WORD = re.compile(rb"=\?[^?]+\?[bBqQ]\?")


def raw_header(raw, name):
    """The raw (unfolded) value of the first header called name."""
    head = raw.split(b"\r\n\r\n", 1)[0]
    m = re.search(rb"(?im)^" + re.escape(name.encode()) + rb":(.*(?:\r\n[ \t].*)*)", head)
    return m.group(1).replace(b"\r\n", b"") if m else None


def check_lines(raw, problems):
    lines = raw.split(b"\r\n")
    for i, line in enumerate(lines, 1):
        if len(line) > 998:
            problems.append("line %d is %d octets (RFC 5322: at most 998)" % (i, len(line)))
        if b"\r" in line or b"\n" in line:
            problems.append("line %d has a bare CR or LF" % i)


def check_iso2022jp(part, problems, where):
    cte = part.get("Content-Transfer-Encoding", "").strip().lower()
    if cte != "7bit":
        problems.append("%s: ISO-2022-JP part is %r, not 7bit (RFC 1468)" % (where, cte or "(none)"))
    payload = part.get_payload(decode=True)
    if any(b >= 0x80 for b in payload):
        problems.append("%s: ISO-2022-JP part has 8-bit bytes" % where)
    for i, line in enumerate(payload.split(b"\r\n"), 1):
        esc = line.rfind(b"\x1b")
        if esc >= 0 and not (line[esc:esc + 3] in (b"\x1b(B", b"\x1b(J")):
            problems.append("%s: line %d does not end in ASCII (RFC 1468)" % (where, i))
            break
    try:
        payload.decode("iso2022_jp", errors="strict")
    except UnicodeDecodeError as e:
        problems.append("%s: does not decode as ISO-2022-JP: %s" % (where, e))


def check(path, charset=None):
    with open(path, "rb") as f:
        raw = f.read()
    m = email.message_from_bytes(raw, policy=email.policy.default)
    problems = ["message: %r" % d for d in m.defects]
    out = {"file": path, "headers": {}, "parts": [], "problems": problems}
    check_lines(raw, problems)
    for name in SINGLE:
        vals = m.get_all(name) or []
        if len(vals) != 1:
            problems.append("%s appears %d times" % (name, len(vals)))
        for v in vals:
            problems += ["%s: %r" % (name, d) for d in getattr(v, "defects", ())]
        out["headers"][name] = [str(v) for v in vals]
    subject = str(m.get("Subject", ""))
    rs = raw_header(raw, "Subject") or b""
    if subject.isascii() and ENCODED_WORD.search(rs):
        problems.append("ASCII subject sent as an encoded-word: %r" % rs.strip().decode("ascii", "replace"))
    if m.get_content_type() != "multipart/alternative":
        problems.append("type %s, not multipart/alternative" % m.get_content_type())
    parts = list(m.iter_parts()) if m.is_multipart() else [m]
    if [p.get_content_type() for p in parts] != ["text/plain", "text/html"]:
        problems.append("parts %s, not text/plain then text/html" % [p.get_content_type() for p in parts])
    for p in parts:
        where = p.get_content_type()
        problems += ["%s: %r" % (where, d) for d in p.defects]
        cs = p.get_content_charset()
        cte = p.get("Content-Transfer-Encoding", "").strip().lower()
        if charset and cs != charset:
            problems.append("%s: charset %s, not %s" % (where, cs, charset))
        if cte not in ("8bit", "binary"):
            payload = p.get_payload(decode=False)
            if isinstance(payload, str) and not payload.isascii():
                problems.append("%s: 8-bit text in a %s part" % (where, cte or "7bit"))
        if cs == "iso-2022-jp":
            check_iso2022jp(p, problems, where)
        try:
            content = p.get_content()
        except Exception as e:  # a part the package cannot decode is a problem, not a crash
            problems.append("%s: cannot decode: %s" % (where, e))
            content = ""
        out["parts"].append({"type": where, "charset": cs, "cte": cte, "content": content})
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--charset", help="every part must be in this charset")
    ap.add_argument("files", nargs="+")
    args = ap.parse_args()
    results = [check(f, args.charset) for f in args.files]
    json.dump(results, sys.stdout, ensure_ascii=False, indent=1)
    sys.stdout.write("\n")
    return 1 if any(r["problems"] for r in results) else 0


if __name__ == "__main__":
    sys.exit(main())
