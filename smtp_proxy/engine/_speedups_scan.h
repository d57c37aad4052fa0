/* The scanner proper, compiled once per string kind (see _speedups.c): CHAR_T,
 * CHAR_SIZE and SUFFIX are defined by the includer. */

#define CH(t, i) ((Py_UCS4)((const CHAR_T *)(t)->data)[i])
#define FN(name) FN_(name, SUFFIX)
#define FN_(name, suffix) FN__(name, suffix)
#define FN__(name, suffix) name##_##suffix

/* The next `ch` in [start, end), -1 if none, -2 on error. */
static Py_ssize_t
FN(find_char)(Text *t, Py_UCS4 ch, Py_ssize_t start, Py_ssize_t end)
{
    (void)t;
    if (start >= end)
        return -1;
#if CHAR_SIZE == 1
    if (ch > 0xFF)
        return -1;
    const Py_UCS1 *s = (const Py_UCS1 *)t->data;
    const Py_UCS1 *hit = memchr(s + start, (int)ch, (size_t)(end - start));
    return hit == NULL ? -1 : hit - s;
#else
    const CHAR_T *s = (const CHAR_T *)t->data;
    for (Py_ssize_t i = start; i < end; i++) {
        if (s[i] == ch)
            return i;
    }
    return -1;
#endif
}

/* html[i:i+len(word)] == word, all within end: ASCII classes (`ascii_ci`) or
 * (?i:...) matching (`re_ci`). */
static int
FN(seq_ascii)(Text *t, Py_ssize_t i, Py_ssize_t end, const char *word)
{
    for (; *word; word++, i++) {
        if (i >= end || !ascii_ci(CH(t, i), *word))
            return 0;
    }
    return 1;
}

static int
FN(seq_re)(Text *t, Py_ssize_t i, Py_ssize_t end, const char *word)
{
    for (; *word; word++, i++) {
        if (i >= end || !re_ci(t, CH(t, i), *word))
            return 0;
    }
    return 1;
}

static int
FN(e_at)(Text *t, Py_ssize_t i, Py_ssize_t end)
{
    return i < end && IS_E(CH(t, i));
}

static Py_ssize_t
FN(skip_ws)(Text *t, Py_ssize_t q, Py_ssize_t end)
{
    while (q < end && IS_WS(CH(t, q)))
        q++;
    return q;
}

/* _NAME: [^WS/>]*+ */
static Py_ssize_t
FN(name_end)(Text *t, Py_ssize_t q, Py_ssize_t end)
{
    while (q < end) {
        Py_UCS4 c = CH(t, q);
        if (IS_E(c))
            break;
        q++;
    }
    return q;
}

/* _VALUE: "[^"]*+(?:"|\Z) | '[^']*+(?:'|\Z) | [^WS>"'][^WS>]*+ | (empty) */
static Py_ssize_t
FN(value_end)(Text *t, Py_ssize_t q, Py_ssize_t end)
{
    if (q >= end)
        return q;
    Py_UCS4 c = CH(t, q);
    if (c == '"' || c == '\'') {
        Py_ssize_t r = FN(find_char)(t, c, q + 1, end);
        if (r == -2)
            return -2;
        return r < 0 ? end : r + 1;
    }
    if (IS_WS(c) || c == '>')
        return q;
    q++;
    while (q < end) {
        c = CH(t, q);
        if (IS_WS(c) || c == '>')
            break;
        q++;
    }
    return q;
}

/* One attribute from its name's first character at q (anything but WS, "/" and ">"):
 * [^WS/>][^WS/>=]*+(?:[WS]*+=[WS]*+VALUE)?+ ; where it ends, or -2 on error. */
static Py_ssize_t
FN(attribute_end)(Text *t, Py_ssize_t q, Py_ssize_t end)
{
    q++;
    while (q < end) {
        Py_UCS4 c = CH(t, q);
        if (IS_E(c) || c == '=')
            break;
        q++;
    }
    Py_ssize_t s = FN(skip_ws)(t, q, end);
    if (s < end && CH(t, s) == '=')
        return FN(value_end)(t, FN(skip_ws)(t, s + 1, end), end);
    return q;
}

/* _ATTRS: (?:[WS/]*+[^WS/>][^WS/>=]*+(?:[WS]*+=[WS]*+VALUE)?+)*+[WS/]*+
 * Returns where it ends (the caller then wants a ">" there), or -2 on error. */
static Py_ssize_t
FN(attrs_end)(Text *t, Py_ssize_t q, Py_ssize_t end)
{
    for (;;) {
        Py_ssize_t r = q;
        while (r < end) {
            Py_UCS4 c = CH(t, r);
            if (!(IS_WS(c) || c == '/'))
                break;
            r++;
        }
        if (r >= end || CH(t, r) == '>')
            return r;
        q = FN(attribute_end)(t, r, end);
        if (q == -2)
            return -2;
    }
}

/* ATTRS followed by ">" from q: the position after the ">", -1 if the tag does not
 * close, -2 on error. */
static Py_ssize_t
FN(close_tag)(Text *t, Py_ssize_t q, Py_ssize_t end)
{
    q = FN(attrs_end)(t, q, end);
    if (q == -2)
        return -2;
    return (q < end && CH(t, q) == '>') ? q + 1 : -1;
}

/* _BORING_START at i (an ASCII letter): a start tag the scan does not care about. */
static int
FN(boring_start)(Text *t, Py_ssize_t i, Py_ssize_t end)
{
    switch ((char)(CH(t, i) | 0x20)) {
    case 'a':
        return !(FN(e_at)(t, i + 1, end) || (FN(seq_ascii)(t, i + 1, end, "rea") && FN(e_at)(t, i + 4, end)));
    case 'i':
        return !(FN(seq_ascii)(t, i + 1, end, "frame") && FN(e_at)(t, i + 6, end));
    case 'n':
        return !(FN(seq_ascii)(t, i + 1, end, "o") &&
                 ((FN(seq_ascii)(t, i + 2, end, "embed") && FN(e_at)(t, i + 7, end)) ||
                  (FN(seq_ascii)(t, i + 2, end, "frames") && FN(e_at)(t, i + 8, end))));
    case 'p':
        return !(FN(seq_ascii)(t, i + 1, end, "laintext") && FN(e_at)(t, i + 9, end));
    case 's':
        return !((FN(seq_ascii)(t, i + 1, end, "cript") && FN(e_at)(t, i + 6, end)) ||
                 (FN(seq_ascii)(t, i + 1, end, "tyle") && FN(e_at)(t, i + 5, end)));
    case 't':
        return !((FN(seq_ascii)(t, i + 1, end, "itle") && FN(e_at)(t, i + 5, end)) ||
                 (FN(seq_ascii)(t, i + 1, end, "extarea") && FN(e_at)(t, i + 8, end)));
    case 'v':
        return !(i + 1 < end && CH(t, i + 1) == ':');
    case 'x':
        return !(FN(seq_ascii)(t, i + 1, end, "mp") && FN(e_at)(t, i + 3, end));
    default:
        return 1;
    }
}

/* Where raw text starting at q ends: the "<" of the first "</name" (name matched as
 * (?i:name)) followed by [WS/>], or, with at_end, by the end of the scanned text; *found
 * says whether there is one, else `end` is returned. The skip regex's style/title
 * alternatives want [WS/>] (at_end 0), _RAW_END_RE accepts the end too (at_end 1). */
static Py_ssize_t
FN(raw_until)(Text *t, Py_ssize_t q, Py_ssize_t end, const char *name, int at_end, int *found)
{
    size_t n = strlen(name);
    *found = 0;
    for (;;) {
        Py_ssize_t r = FN(find_char)(t, '<', q, end);
        if (r == -2)
            return -2;
        if (r < 0)
            return end;
        if (r + 1 < end && CH(t, r + 1) == '/' && FN(seq_re)(t, r + 2, end, name)) {
            Py_ssize_t after = r + 2 + (Py_ssize_t)n;
            if (FN(e_at)(t, after, end) || (at_end && after == end)) {
                *found = 1;
                return r;
            }
        }
        if (t->bail)
            return end;
        q = r + 1;
    }
}

/* The conditional-comment test (?![WS]*+\[(?i:if)\b) / CONDITIONAL_COMMENT_RE at q. */
static int
FN(conditional)(Text *t, Py_ssize_t q, Py_ssize_t end)
{
    q = FN(skip_ws)(t, q, end);
    if (!(q < end && CH(t, q) == '[' && FN(seq_re)(t, q + 1, end, "if")))
        return 0;
    q += 3;
    if (q >= end)
        return 1;
    Py_UCS4 c = CH(t, q);
    return !(Py_UNICODE_ISALNUM(c) || c == '_');
}

/* _comment_end: where the first "-->" or "--!>" at or after q starts (all of it before
 * end), -1 if none. */
static Py_ssize_t
FN(comment_end)(Text *t, Py_ssize_t q, Py_ssize_t end)
{
    for (;;) {
        Py_ssize_t i = FN(find_char)(t, '-', q, end);
        if (i < 0)
            return i;
        if (i + 2 < end && CH(t, i + 1) == '-') {
            Py_UCS4 c = CH(t, i + 2);
            if (c == '>' || (c == '!' && i + 3 < end && CH(t, i + 3) == '>'))
                return i;
        }
        q = i + 1;
    }
}

/* _SKIP_RE.match(html, p, end).end() */
static Py_ssize_t
FN(skip)(Text *t, Py_ssize_t p, Py_ssize_t end)
{
    while (p < end) {
        Py_UCS4 c = CH(t, p);
        if (c != '<') {
            Py_ssize_t r = FN(find_char)(t, '<', p, end);
            if (r == -2)
                return -2;
            p = r < 0 ? end : r;
            continue;
        }
        if (p + 1 >= end)
            return end; /* "<" at the end: <(?![A-Za-z/!?]) */
        Py_UCS4 c1 = CH(t, p + 1);
        Py_ssize_t q;
        if (c1 == '/') {
            if (p + 2 < end && IS_ALPHA(CH(t, p + 2))) {
                q = FN(close_tag)(t, FN(name_end)(t, p + 3, end), end);
                if (q == -2)
                    return -2;
                if (q >= 0) {
                    p = q;
                    continue;
                }
            }
            return p;
        }
        if (c1 < 128 && IS_ALPHA(c1)) {
            if (FN(boring_start)(t, p + 1, end)) {
                q = FN(close_tag)(t, FN(name_end)(t, p + 2, end), end);
                if (q == -2)
                    return -2;
                if (q < 0)
                    return p;
                p = q;
                continue;
            }
            static const char *raw_skipped[] = {"style", "title"};
            int matched = 0;
            for (int k = 0; k < 2 && !matched; k++) {
                const char *name = raw_skipped[k];
                Py_ssize_t after = p + 1 + (Py_ssize_t)strlen(name);
                if (!(FN(seq_re)(t, p + 1, end, name) && FN(e_at)(t, after, end)))
                    continue;
                q = FN(close_tag)(t, after, end);
                if (q == -2)
                    return -2;
                if (q >= 0) {
                    int found;
                    p = FN(raw_until)(t, q, end, name, 0, &found);
                    if (p == -2)
                        return -2;
                    matched = 1;
                }
            }
            if (t->bail)
                return p;
            if (matched)
                continue;
            return p;
        }
        if (c1 == '!' && p + 3 < end && CH(t, p + 2) == '-' && CH(t, p + 3) == '-') {
            /* a comment: <!--(?:-?>|(?!conditional)...--!?>) */
            q = p + 4;
            if (q < end && CH(t, q) == '>') {
                p = q + 1;
                continue;
            }
            if (q + 1 < end && CH(t, q) == '-' && CH(t, q + 1) == '>') {
                p = q + 2;
                continue;
            }
            if (FN(conditional)(t, q, end) || t->bail)
                return p;
            Py_ssize_t close = FN(comment_end)(t, q, end);
            if (close == -2)
                return -2;
            if (close < 0)
                return p;
            p = close + (CH(t, close + 2) == '!' ? 4 : 3);
            continue;
        }
        if (c1 == '!' || c1 == '?') { /* <!(?!--)[^>]*+> and <\?[^>]*+> */
            q = FN(find_char)(t, '>', p + 2, end);
            if (q == -2)
                return -2;
            if (q < 0)
                return p;
            p = q + 1;
            continue;
        }
        /* (?i:style) and (?i:title) are tried before <(?![A-Za-z/!?]) */
        if (c1 == 0x17F) {
            t->bail = 1;
            return p;
        }
        p++;
    }
    return p;
}


/* _LINK_RE.match(html, p, end) (p is a "<"): 1 with *m filled, 0 if no match,
 * -2 on error. */
static int
FN(link_match)(Text *t, Py_ssize_t p, Py_ssize_t end, LinkMatch *m)
{
    Py_ssize_t q = p + 1;
    if (q >= end)
        return 0;
    if (re_ci(t, CH(t, q), 'a')) {
        if (FN(e_at)(t, q + 1, end)) {
            m->code = CODE_A;
            q += 1;
        }
        else if (FN(seq_re)(t, q + 1, end, "rea") && FN(e_at)(t, q + 4, end)) {
            m->code = CODE_AREA;
            q += 4;
        }
        else
            return 0;
    }
    else if ((CH(t, q) == 'v' || CH(t, q) == 'V') && q + 1 < end && CH(t, q + 1) == ':') {
        m->code = CODE_VML;
        q = FN(name_end)(t, q + 2, end);
    }
    else
        return 0;
    /* _NOT_HREF_ATTR*+ */
    for (;;) {
        if (q >= end)
            return 0;
        Py_UCS4 c = CH(t, q);
        if (IS_WS(c) || c == '/') {
            q++;
            continue;
        }
        if (c == '>')
            return 0;
        if (FN(seq_re)(t, q, end, "href") && q + 4 < end &&
            (IS_E(CH(t, q + 4)) || CH(t, q + 4) == '='))
            break;
        q = FN(attribute_end)(t, q, end);
        if (q == -2)
            return -2;
    }
    /* (?i:href)[WS]*+=[WS]*+(?>"([^"]*+)(?:"|\Z)|'([^']*+)(?:'|\Z)|([^WS>]*+)) */
    q = FN(skip_ws)(t, q + 4, end);
    if (!(q < end && CH(t, q) == '='))
        return 0;
    q = FN(skip_ws)(t, q + 1, end);
    Py_ssize_t vs, ve;
    Py_UCS4 c = q < end ? CH(t, q) : 0;
    if (q < end && (c == '"' || c == '\'')) {
        vs = q + 1;
        Py_ssize_t r = FN(find_char)(t, c, vs, end);
        if (r == -2)
            return -2;
        ve = r < 0 ? end : r;
        q = r < 0 ? end : r + 1;
    }
    else {
        vs = q;
        while (q < end) {
            c = CH(t, q);
            if (IS_WS(c) || c == '>')
                break;
            q++;
        }
        ve = q;
    }
    q = FN(close_tag)(t, q, end);
    if (q == -2)
        return -2;
    if (q < 0)
        return 0;
    /* _strip_span */
    while (vs < ve && IS_WS(CH(t, vs)))
        vs++;
    while (ve > vs && IS_WS(CH(t, ve - 1)))
        ve--;
    m->value_start = vs;
    m->value_end = ve;
    m->tag_end = q;
    /* _may_opt_out: "track" or "clickrelay" in the lower-cased tag; with any
     * non-ASCII character the Python code decides (str.lower() folds some). */
    m->defer = 0;
    for (Py_ssize_t i = p; i < q; i++) {
        Py_UCS4 ch = CH(t, i);
        if (ch >= 128 || (ascii_ci(ch, 't') && FN(seq_ascii)(t, i, q, "track")) ||
            (ascii_ci(ch, 'c') && FN(seq_ascii)(t, i, q, "clickrelay"))) {
            m->defer = 1;
            break;
        }
    }
    return 1;
}

/* _script_end: the start of the </script> that ends a script whose content starts at
 * pos, -1 if it runs to the end, -2 on error. */
static Py_ssize_t
FN(script_end)(Text *t, Py_ssize_t pos, Py_ssize_t end)
{
    int state = 0; /* 0: script data, 1: escaped, 2: double-escaped */
    Py_ssize_t i = pos;
    while (i < end) {
        Py_UCS4 c = CH(t, i);
        if (c == '<') {
            if (i + 3 < end && CH(t, i + 1) == '!' && CH(t, i + 2) == '-' && CH(t, i + 3) == '-') {
                if (state == 0) {
                    state = 1;
                    i += 2;
                }
                else
                    i += 4;
                continue;
            }
            if (FN(seq_re)(t, i + 1, end, "script") && FN(e_at)(t, i + 7, end)) {
                if (state == 1)
                    state = 2;
                i += 7;
                continue;
            }
            if (i + 1 < end && CH(t, i + 1) == '/' && FN(seq_re)(t, i + 2, end, "script") &&
                (i + 8 == end || FN(e_at)(t, i + 8, end))) {
                if (state != 2)
                    return i;
                state = 1;
                i += 8;
                continue;
            }
            if (t->bail)
                return -1;
        }
        else if (c == '-' && i + 2 < end && CH(t, i + 1) == '-' && CH(t, i + 2) == '>') {
            if (state != 0)
                state = 0;
            i += 3;
            continue;
        }
        i++;
    }
    return -1;
}

static int
FN(ascii_name_is)(Text *t, Py_ssize_t a, Py_ssize_t b, const char *word)
{
    return b - a == (Py_ssize_t)strlen(word) && FN(seq_ascii)(t, a, b, word);
}

/* html_scan._scan: 0 done, -1 error (exception set). Stops early with t->bail. */
static int
FN(scan)(Text *t, Py_ssize_t pos, Py_ssize_t end, int in_comment, PyObject *out)
{
    static const char *raw_names[] = {"script", "style", "title", "textarea", "xmp",
                                      "iframe", "noembed", "noframes", NULL};
    for (;;) {
        pos = FN(skip)(t, pos, end);
        if (pos == -2)
            return -1;
        if (t->bail || pos >= end)
            return 0;
        int have_next = pos + 1 < end;
        Py_UCS4 nxt = have_next ? CH(t, pos + 1) : 0;
        if (have_next && nxt == '!') {
            if (pos + 4 <= end && CH(t, pos + 2) == '-' && CH(t, pos + 3) == '-') {
                /* html.startswith(">", pos + 4): not bounded by end */
                if (pos + 4 < t->len && CH(t, pos + 4) == '>') {
                    pos += 5;
                    continue;
                }
                if (pos + 5 < t->len && CH(t, pos + 4) == '-' && CH(t, pos + 5) == '>') {
                    pos += 6;
                    continue;
                }
                Py_ssize_t close = FN(comment_end)(t, pos + 4, end);
                if (close == -2)
                    return -1;
                if (close < 0)
                    return 0;
                if (!in_comment && FN(conditional)(t, pos + 4, close)) {
                    if (FN(scan)(t, pos + 4, close, 1, out) < 0)
                        return -1;
                }
                if (t->bail)
                    return 0;
                Py_ssize_t gt = FN(find_char)(t, '>', close, t->len);
                if (gt < 0)
                    return gt == -2 ? -1 : 0;
                pos = gt + 1;
                continue;
            }
            Py_ssize_t gt = FN(find_char)(t, '>', pos + 2, end);
            if (gt == -2)
                return -1;
            pos = gt < 0 ? -1 : gt + 1;
        }
        else if (have_next && nxt == '?') {
            Py_ssize_t gt = FN(find_char)(t, '>', pos + 2, end);
            if (gt == -2)
                return -1;
            pos = gt < 0 ? -1 : gt + 1;
        }
        else if (have_next && nxt == '/') {
            if (pos + 2 >= end)
                return 0;
            if (CH(t, pos + 2) == '>') {
                pos += 3;
                continue;
            }
            Py_ssize_t gt = FN(find_char)(t, '>', pos + 2, end);
            if (gt == -2)
                return -1;
            pos = gt < 0 ? -1 : gt + 1;
        }
        else {
            LinkMatch m;
            int rc = FN(link_match)(t, pos, end, &m);
            if (rc == -2)
                return -1;
            if (t->bail)
                return 0;
            if (rc == 1 && !m.defer) {
                if (append(out, m.code, m.value_start, m.value_end, in_comment, m.tag_end) < 0)
                    return -1;
                pos = m.tag_end;
                continue;
            }
            /* _TAG_RE: <(/?)([A-Za-z][^WS/>]*+)(ATTRS)> (no "/": nxt is not one) */
            if (!(have_next && IS_ALPHA(nxt)))
                return 0;
            Py_ssize_t name_start = pos + 1;
            Py_ssize_t name_stop = FN(name_end)(t, pos + 2, end);
            Py_ssize_t tag_end = FN(close_tag)(t, name_stop, end);
            if (tag_end == -2)
                return -1;
            if (tag_end < 0)
                return 0;
            if (FN(ascii_name_is)(t, name_start, name_stop, "a") ||
                FN(ascii_name_is)(t, name_start, name_stop, "area") ||
                (name_stop - name_start >= 2 && ascii_ci(CH(t, name_start), 'v') &&
                 CH(t, name_start + 1) == ':')) {
                if (append(out, CODE_DEFER, pos, end, in_comment, tag_end) < 0)
                    return -1;
                pos = tag_end;
                continue;
            }
            pos = tag_end;
            if (FN(ascii_name_is)(t, name_start, name_stop, "plaintext"))
                return 0;
            if (FN(ascii_name_is)(t, name_start, name_stop, "script")) {
                pos = FN(script_end)(t, pos, end);
            }
            else {
                for (int k = 1; raw_names[k]; k++) {
                    if (FN(ascii_name_is)(t, name_start, name_stop, raw_names[k])) {
                        int found;
                        Py_ssize_t r = FN(raw_until)(t, pos, end, raw_names[k], 1, &found);
                        if (r == -2)
                            return -1;
                        pos = found ? r : -1;
                        break;
                    }
                }
            }
            if (t->bail)
                return 0;
        }
        if (pos < 0)
            return 0;
    }
}


#undef CH
#undef FN
#undef FN_
#undef FN__
