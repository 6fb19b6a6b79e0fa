"""The checking API every lab's test cells use: failures that say what was expected, what happened and
where to look, and one comparison of facts that explains their first difference.

    check_equal(decode_selector(0x2b), (5, 0, 3), what="decode_selector(0x2b)",
                hint="the RPL is the low two bits; the index starts at bit 3")

Every failure is an AssertionError (so nbgrader scores the cell 0). A passing cell of visible checks
never claims more than it checked: `visible_checks_passed` says the hidden checks are still to come.
"""


def check(condition, what, expected=None, got=None, hint=None):
    """Assert `condition`; if it fails, say what was checked, what was expected, what happened, and
    where to look."""
    if condition:
        return
    lines = [f"Check failed: {what}"]
    if expected is not None:
        lines.append(f"  expected: {shown(expected)}")
    if got is not None:
        lines.append(f"  got:      {shown(got)}")
    if hint:
        lines.append(f"  where to look: {hint}")
    raise AssertionError("\n".join(lines))


def check_equal(got, expected, what, hint=None):
    check(got == expected, what, expected=expected, got=got, hint=hint)


def check_cases(function, cases, what, hint=None, show=3):
    """Call `function(*args)` for each (args, expected) in `cases`; fail listing the first few cases
    it gets wrong (and how many in all), so the student sees a pattern, not just one miss."""
    wrong = []
    for args, expected in cases:
        args = args if isinstance(args, tuple) else (args,)
        try:
            got = function(*args)
        except Exception as error:                  # the student's code raised: report it as the answer
            got = f"{type(error).__name__}: {error}"
        if got != expected:
            wrong.append((args, expected, got))
    call = getattr(function, "__name__", "your function")
    fail_cases(what, [(f"{call}({', '.join(shown(a) for a in args)})", expected, got)
                      for args, expected, got in wrong], len(cases), "cases", hint, show)


def fail_cases(what, wrong, total, unit, hint=None, show=3):
    """Fail, if `wrong` ([(the case in words, expected, got)]) is not empty, listing its first few."""
    if not wrong:
        return
    lines = [f"Check failed: {what}: {len(wrong)} of {total} {unit} wrong"]
    for case, expected, got in wrong[:show]:
        lines.append(f"  {case}\n      expected: {shown(expected)}\n      got:      {shown(got)}")
    if len(wrong) > show:
        lines.append(f"  ... and {len(wrong) - show} more")
    if hint:
        lines.append(f"  where to look: {hint}")
    raise AssertionError("\n".join(lines))


def check_facts(got, expected, what, hints=None, fields=None, unit="item", end="(nothing)", notes=None,
                tolerance=0.0):
    """Compare two sets of facts about a run (dicts of plain data: what a student's code did, and what the
    reference did), field by field in the order of `fields` (default: `expected`'s), and fail at the
    first field that differs, showing where it first differs:

    - a list at its first differing item, counted from 1 in `unit`s ("round 3 of 5 expected"), `end`
      standing for the items of a list that ended early, and `notes[field][i]` added when given (where
      item i happened, in words);
    - a dict at the keys whose values differ;
    - a text of several lines at its first differing line;
    - a float within `tolerance` (relative, at least absolute) of the expected one counts as equal.

    `hints` gives each field's "where to look"."""
    hints, notes = hints or {}, notes or {}
    for field in (fields if fields is not None else expected):
        if field not in expected:
            continue
        g, e = got.get(field), expected[field]
        if g == e or (isinstance(g, float) and isinstance(e, float) and abs(g - e) <= tolerance * max(1.0, abs(e))):
            continue
        name = field
        if isinstance(e, list) and isinstance(g, list):
            first, g, e = first_difference(g, e, end)
            name = f"{field}, {unit} {first + 1} of {len(expected[field])} expected"
            note = notes.get(field) or []
            name += note[first] if first < len(note) else ""
        elif isinstance(e, dict) and isinstance(g, dict):
            keys = [k for k in e if g.get(k) != e[k]] + [k for k in g if k not in e]
            g, e = {k: g.get(k) for k in keys}, {k: e.get(k) for k in keys}
        elif isinstance(e, str) and isinstance(g, str) and "\n" in e + g:
            first, g, e = first_difference(g.split("\n"), e.split("\n"), "(no more output)")
            name = f"{field}, line {first + 1}"
        lines = [f"Check failed: {what}: {name}", f"  expected: {shown(e)}", f"  got:      {shown(g)}"]
        if hints.get(field):
            lines.append(f"  where to look: {hints[field]}")
        raise AssertionError("\n".join(lines))


def first_difference(got, expected, past_the_end):
    """Where two lists first differ, and the two items there (`past_the_end` for a list that ended)."""
    first = next((i for i, (a, b) in enumerate(zip(got, expected)) if a != b), min(len(got), len(expected)))
    return (first, got[first] if first < len(got) else past_the_end,
            expected[first] if first < len(expected) else past_the_end)


def visible_checks_passed(subject):
    """What a passing cell of visible checks may honestly say."""
    print(f"Visible checks for {subject} passed; hidden checks run when the lab is graded.")


def shown(value):
    """repr, with numbers above 9 in hex (addresses, selectors and descriptors read best that way)."""
    if isinstance(value, bool) or value is None or isinstance(value, (str, float)):
        return repr(value)
    if isinstance(value, int):
        return f"{value:#x}" if value > 9 else str(value)
    if isinstance(value, dict):
        return "{" + ", ".join(f"{shown(k)}: {shown(v)}" for k, v in value.items()) + "}"
    if isinstance(value, (list, tuple)):
        inner = ", ".join(map(shown, value))
        return f"({inner}{',' if len(value) == 1 else ''})" if isinstance(value, tuple) else f"[{inner}]"
    return repr(value)
