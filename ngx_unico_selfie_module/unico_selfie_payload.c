
/*
 * Copyright (C) ngx_unico_selfie_module authors
 *
 * The pure core: Unico's Get Selfie JSON, its base64 and the processId.
 * Plain C99, no nginx types, no global mutable state: every function is
 * reentrant and may run in any number of threads at once.
 */


#include <string.h>

#include <yajl/yajl_parse.h>

#include "unico_selfie_base64.h"
#include "unico_selfie_payload.h"


/*
 * The JSON parser.
 *
 * yajl's callback parser is given the whole body, in one yajl_parse()
 * call or, on the fast path (unico_payload_run()), in two that leave out
 * the fileContents string, so it hands strings without escapes to the
 * callbacks as pointers into buf, and never reads again what it has
 * passed.  The fileContents string is decoded, as soon as it is seen, into
 * buf[0 ..): the image is always shorter than the JSON before the string's
 * closing quote, at least 17 bytes ({"fileContents":") plus the string, so
 * the decoder only writes where yajl has already read, or skipped.  A
 * string with escapes (\/, \n, \u002F) comes from yajl's own decode buffer,
 * or on the fast path is unescaped in place, and is decoded into buf[0 ..)
 * too.
 *
 * The values of contentType and of the other fields are not kept: the type
 * is turned into an enum at once, as buf may be overwritten later.
 *
 * The first problem met in document order is the one reported: a callback
 * that finds one cancels the parse, and the checks that need both fields
 * (a missing field, the image's signature) come after a valid document.
 *
 * yajl's UTF-8 validation of strings is left on: fileContents and
 * contentType are ASCII, so it costs next to nothing, and it keeps the
 * parser strict on the other fields as well.
 */

typedef enum {
    UNICO_FIELD_NONE = 0,
    UNICO_FIELD_FILE,
    UNICO_FIELD_TYPE
} unico_field_e;


typedef struct {
    unsigned char       *buf;
    size_t               max_image;
    size_t               depth;       /* of maps and arrays: 1 at top level */
    size_t               len;         /* of the decoded image */
    size_t               fast_start;  /* the raw fileContents string, */
    size_t               fast_len;    /* on the fast path */
    unico_field_e        field;       /* whose value comes next */
    unico_image_type_e   type;
    unico_payload_rc_e   rc;          /* why a callback cancelled */
    unsigned             file_seen:1;
    unsigned             type_seen:1;
    unsigned             fast_next:1; /* the next token is that string */
    unsigned             fast_esc:1;  /* it has backslashes */
    unsigned             fast_lost:1; /* yajl did not see it as expected */
} unico_payload_ctx_t;


static int unico_payload_null(void *data);
static int unico_payload_boolean(void *data, int value);
static int unico_payload_number(void *data, const char *value, size_t len);
static int unico_payload_string(void *data, const unsigned char *value,
    size_t len);
static int unico_payload_start_map(void *data);
static int unico_payload_map_key(void *data, const unsigned char *key,
    size_t len);
static int unico_payload_end(void *data);
static int unico_payload_start_array(void *data);
static unico_payload_rc_e unico_payload_run(unsigned char *buf, size_t len,
    size_t max_image, unico_image_t *out, unsigned fast);
static int unico_payload_scalar(unico_payload_ctx_t *ctx);
static int unico_payload_fast(unico_payload_ctx_t *ctx);
static int unico_payload_image(unico_payload_ctx_t *ctx,
    const unsigned char *s, size_t len, unsigned raw);
static unsigned unico_payload_locate(const unsigned char *buf, size_t len,
    size_t *start, size_t *end, unsigned *esc);
static const unsigned char *unico_json_blanks(const unsigned char *p,
    const unsigned char *last);
static const unsigned char *unico_json_string_end(const unsigned char *p,
    const unsigned char *last, unsigned *esc);
static int unico_json_text_valid(const unsigned char *s, size_t len);
static size_t unico_json_unescape(unsigned char *s, size_t len,
    size_t *min);
static int unico_json_hex4(const unsigned char *p, uint32_t *cp);
static size_t unico_utf8_put(unsigned char *d, uint32_t cp);
static unico_image_type_e unico_payload_mime(const unsigned char *s,
    size_t len);
static int unico_ascii_caseeq(const unsigned char *s, const char *lower,
    size_t len);
static unico_image_type_e unico_image_sniff(const unsigned char *p,
    size_t len);


/*
 * yajl_number catches every number, so that yajl neither converts nor
 * refuses big ones ("integer overflow") in fields that do not matter.
 */

static const yajl_callbacks  unico_payload_callbacks = {
    unico_payload_null,
    unico_payload_boolean,
    NULL,                                       /* yajl_integer */
    NULL,                                       /* yajl_double */
    unico_payload_number,
    unico_payload_string,
    unico_payload_start_map,
    unico_payload_map_key,
    unico_payload_end,
    unico_payload_start_array,
    unico_payload_end
};


unico_payload_rc_e
unico_payload_parse(unsigned char *buf, size_t len, size_t max_image,
    unico_image_t *out)
{
    return unico_payload_run(buf, len, max_image, out, 1);
}


unico_payload_rc_e
unico_payload_parse_reference(unsigned char *buf, size_t len,
    size_t max_image, unico_image_t *out)
{
    return unico_payload_run(buf, len, max_image, out, 0);
}


/*
 * The fast path.  yajl lexes a string byte by byte, which for the image's
 * base64 costs more than decoding it.  So when a pre-scan finds the top-
 * level fileContents and its string, yajl is given the document in two
 * pieces: up to and with the string's opening quote, then from its closing
 * quote on.  yajl keeps the opening quote of the unfinished token and then
 * sees an empty string "", whose callback decodes the real, raw text of
 * the string from buf instead: unico_payload_fast().  Everything else, the
 * rest of the document and the order in which problems are met included,
 * is yajl's as before.
 *
 * The pre-scan is no validator: should yajl not see that empty string as
 * the value of the top-level fileContents (a document malformed in a way
 * that the pre-scan did not notice), buf is still untouched and the parse
 * starts again, without the fast path.
 */

static unico_payload_rc_e
unico_payload_run(unsigned char *buf, size_t len, size_t max_image,
    unico_image_t *out, unsigned fast)
{
    size_t               start, end;
    unsigned             esc;
    yajl_handle          hand;
    yajl_status          status;
    unico_payload_ctx_t  ctx;

    out->data = NULL;
    out->len = 0;
    out->type = UNICO_IMAGE_NONE;

    if (len == 0) {
        return UNICO_PAYLOAD_BAD_JSON;
    }

    start = 0;
    end = 0;
    esc = 0;

    if (fast) {
        fast = unico_payload_locate(buf, len, &start, &end, &esc);
    }

again:

    memset(&ctx, 0, sizeof(unico_payload_ctx_t));

    ctx.buf = buf;
    ctx.max_image = max_image;
    ctx.field = UNICO_FIELD_NONE;
    ctx.type = UNICO_IMAGE_NONE;
    ctx.rc = UNICO_PAYLOAD_OK;

    hand = yajl_alloc(&unico_payload_callbacks, NULL, &ctx);
    if (hand == NULL) {
        return UNICO_PAYLOAD_NO_MEMORY;
    }

    if (fast) {
        ctx.fast_start = start;
        ctx.fast_len = end - start;
        ctx.fast_esc = esc;

        status = yajl_parse(hand, buf, start);

        if (status == yajl_status_ok) {
            ctx.fast_next = 1;
            status = yajl_parse(hand, buf + end, len - end);
        }

        if (ctx.fast_next || ctx.fast_lost) {
            yajl_free(hand);
            fast = 0;
            goto again;
        }

    } else {
        status = yajl_parse(hand, buf, len);
    }

    if (status == yajl_status_ok) {
        status = yajl_complete_parse(hand);
    }

    yajl_free(hand);

    switch (status) {

    case yajl_status_ok:
        break;

    case yajl_status_client_canceled:
        return (ctx.rc != UNICO_PAYLOAD_OK) ? ctx.rc
                                            : UNICO_PAYLOAD_BAD_JSON;

    case yajl_status_error:
    default:
        return UNICO_PAYLOAD_BAD_JSON;
    }

    if (!ctx.file_seen || !ctx.type_seen) {
        return UNICO_PAYLOAD_MISSING_FIELD;
    }

    if (unico_image_sniff(buf, ctx.len) != ctx.type) {
        return UNICO_PAYLOAD_IMAGE_MISMATCH;
    }

    out->data = buf;
    out->len = ctx.len;
    out->type = ctx.type;

    return UNICO_PAYLOAD_OK;
}


static int
unico_payload_null(void *data)
{
    return unico_payload_scalar(data);
}


static int
unico_payload_boolean(void *data, int value)
{
    (void) value;

    return unico_payload_scalar(data);
}


static int
unico_payload_number(void *data, const char *value, size_t len)
{
    (void) value;
    (void) len;

    return unico_payload_scalar(data);
}


static int
unico_payload_string(void *data, const unsigned char *value, size_t len)
{
    unico_payload_ctx_t  *ctx = data;

    if (ctx->fast_next) {
        return unico_payload_fast(ctx);
    }

    if (ctx->depth == 0) {
        ctx->rc = UNICO_PAYLOAD_NOT_OBJECT;
        return 0;
    }

    switch (ctx->field) {

    case UNICO_FIELD_FILE:
        ctx->field = UNICO_FIELD_NONE;
        return unico_payload_image(ctx, value, len, 0);

    case UNICO_FIELD_TYPE:
        ctx->field = UNICO_FIELD_NONE;
        ctx->type = unico_payload_mime(value, len);

        if (ctx->type == UNICO_IMAGE_NONE) {
            ctx->rc = UNICO_PAYLOAD_BAD_CONTENT_TYPE;
            return 0;
        }

        return 1;

    case UNICO_FIELD_NONE:
    default:
        return 1;
    }
}


static int
unico_payload_start_map(void *data)
{
    unico_payload_ctx_t  *ctx = data;

    if (ctx->field != UNICO_FIELD_NONE) {
        ctx->rc = UNICO_PAYLOAD_WRONG_TYPE;
        return 0;
    }

    ctx->depth++;

    return 1;
}


static int
unico_payload_map_key(void *data, const unsigned char *key, size_t len)
{
    unico_payload_ctx_t  *ctx = data;

    if (ctx->fast_next) {
        ctx->fast_lost = 1;
        return 0;
    }

    /* keys of nested maps do not matter, whatever their names */

    if (ctx->depth != 1) {
        return 1;
    }

    if (len == sizeof("fileContents") - 1
        && memcmp(key, "fileContents", len) == 0)
    {
        if (ctx->file_seen) {
            ctx->rc = UNICO_PAYLOAD_DUPLICATE_FIELD;
            return 0;
        }

        ctx->file_seen = 1;
        ctx->field = UNICO_FIELD_FILE;

    } else if (len == sizeof("contentType") - 1
               && memcmp(key, "contentType", len) == 0)
    {
        if (ctx->type_seen) {
            ctx->rc = UNICO_PAYLOAD_DUPLICATE_FIELD;
            return 0;
        }

        ctx->type_seen = 1;
        ctx->field = UNICO_FIELD_TYPE;
    }

    return 1;
}


static int
unico_payload_end(void *data)
{
    unico_payload_ctx_t  *ctx = data;

    ctx->depth--;

    return 1;
}


static int
unico_payload_start_array(void *data)
{
    unico_payload_ctx_t  *ctx = data;

    if (ctx->depth == 0) {
        ctx->rc = UNICO_PAYLOAD_NOT_OBJECT;
        return 0;
    }

    if (ctx->field != UNICO_FIELD_NONE) {
        ctx->rc = UNICO_PAYLOAD_WRONG_TYPE;
        return 0;
    }

    ctx->depth++;

    return 1;
}


/* null, true, false or a number */

static int
unico_payload_scalar(unico_payload_ctx_t *ctx)
{
    if (ctx->depth == 0) {
        ctx->rc = UNICO_PAYLOAD_NOT_OBJECT;
        return 0;
    }

    if (ctx->field != UNICO_FIELD_NONE) {
        ctx->rc = UNICO_PAYLOAD_WRONG_TYPE;
        return 0;
    }

    return 1;
}


/*
 * The empty string that yajl saw in place of the fileContents string on
 * the fast path: the real one is buf[fast_start .. + fast_len), raw JSON
 * text, which yajl has not checked.  Without backslashes, it is decoded
 * as it is, by the decoder in raw mode, which refuses the control
 * characters that JSON refuses in a string; with them, it is first
 * unescaped in place, and checked, as yajl would have done.
 */

static int
unico_payload_fast(unico_payload_ctx_t *ctx)
{
    size_t          len, min;
    unsigned char  *s;

    ctx->fast_next = 0;

    if (ctx->depth != 1 || ctx->field != UNICO_FIELD_FILE) {
        ctx->fast_lost = 1;
        return 0;
    }

    ctx->field = UNICO_FIELD_NONE;

    s = ctx->buf + ctx->fast_start;
    len = ctx->fast_len;

    if (!ctx->fast_esc) {
        return unico_payload_image(ctx, s, len, 1);
    }

    /*
     * The size check comes first, as on the full parse, and so leaves buf
     * untouched: a first pass checks and measures without unescaping.
     */

    if (unico_base64_decoded_max(len) > ctx->max_image) {
        len = unico_json_unescape(s, len, &min);

        if (len == (size_t) -1) {
            ctx->rc = UNICO_PAYLOAD_BAD_JSON;
            return 0;
        }

        if (unico_base64_decoded_max(len) > ctx->max_image
            && min > ctx->max_image)
        {
            ctx->rc = UNICO_PAYLOAD_TOO_LARGE;
            return 0;
        }

        len = ctx->fast_len;
    }

    len = unico_json_unescape(s, len, NULL);

    if (len == (size_t) -1) {
        ctx->rc = UNICO_PAYLOAD_BAD_JSON;
        return 0;
    }

    return unico_payload_image(ctx, s, len, 0);
}


/*
 * Decodes the fileContents string s[0 .. len) into buf.  With raw set, s
 * is the raw text of a JSON string without backslashes, which yajl has not
 * seen: a control character or bad UTF-8 in it is bad_json, as yajl would
 * have said before anything else about the string.  The decoder in raw
 * mode takes only sextets, '=' and SP, all valid JSON; when it fails, the
 * text from where it stopped is still there to tell bad JSON from bad
 * base64.
 */

static int
unico_payload_image(unico_payload_ctx_t *ctx, const unsigned char *s,
    size_t len, unsigned raw)
{
    size_t                n;
    const unsigned char  *stop;

    /*
     * A string that may decode to more than max_image bytes is measured
     * first, without writing: only big strings pay for it, and one that
     * surely decodes to too much is refused without being decoded.
     */

    if (unico_base64_decoded_max(len) > ctx->max_image) {

        if (raw && !unico_json_text_valid(s, len)) {
            ctx->rc = UNICO_PAYLOAD_BAD_JSON;
            return 0;
        }

        if (unico_base64_decoded_min(s, len) > ctx->max_image) {
            ctx->rc = UNICO_PAYLOAD_TOO_LARGE;
            return 0;
        }
    }

    n = unico_base64_decode_json(ctx->buf, s, len, raw, &stop);

    if (n == (size_t) -1) {
        ctx->rc = (raw && !unico_json_text_valid(stop, s + len - stop))
                  ? UNICO_PAYLOAD_BAD_JSON : UNICO_PAYLOAD_BAD_BASE64;
        return 0;
    }

    if (n == 0) {
        ctx->rc = UNICO_PAYLOAD_EMPTY_IMAGE;
        return 0;
    }

    if (n > ctx->max_image) {
        ctx->rc = UNICO_PAYLOAD_TOO_LARGE;
        return 0;
    }

    ctx->len = n;

    return 1;
}


/*
 * The fast path's pre-scan: finds the first key of the top-level object
 * whose raw text is exactly fileContents and, when its value is a string,
 * returns 1 and the raw text of that string in buf[*start .. *end), with
 * *esc set if it has backslashes.  It follows the structure only as far
 * as it needs to find its way (strings, depth, keys at depth 1), and gives
 * up (0) on anything unexpected: yajl parses the document all the same.
 */

static unsigned
unico_payload_locate(const unsigned char *buf, size_t len, size_t *start,
    size_t *end, unsigned *esc)
{
    size_t                depth;
    unsigned              key, e;
    const unsigned char  *p, *s, *q, *last;

    last = buf + len;

    p = unico_json_blanks(buf, last);

    if (p == last || *p != '{') {
        return 0;
    }

    p++;
    depth = 1;
    key = 1;                                /* a key may come next */

    for ( ;; ) {
        p = unico_json_blanks(p, last);

        if (p == last) {
            return 0;
        }

        switch (*p) {

        case '{':
        case '[':
            depth++;
            key = 0;
            p++;
            break;

        case '}':
        case ']':
            if (--depth == 0) {
                return 0;
            }

            key = 0;
            p++;
            break;

        case ',':
            key = (depth == 1);
            p++;
            break;

        case ':':
            key = 0;
            p++;
            break;

        case '"':
            e = 0;
            s = p + 1;
            q = unico_json_string_end(s, last, &e);

            if (q == NULL) {
                return 0;
            }

            p = q + 1;

            if (key && e == 0 && q - s == sizeof("fileContents") - 1
                && memcmp(s, "fileContents", q - s) == 0)
            {
                p = unico_json_blanks(p, last);

                if (p == last || *p != ':') {
                    return 0;
                }

                p = unico_json_blanks(p + 1, last);

                if (p == last || *p != '"') {
                    return 0;
                }

                e = 0;
                s = p + 1;
                q = unico_json_string_end(s, last, &e);

                if (q == NULL) {
                    return 0;
                }

                *start = (size_t) (s - buf);
                *end = (size_t) (q - buf);
                *esc = e;

                return 1;
            }

            key = 0;
            break;

        default:

            /* true, false, null, numbers: yajl checks them */

            if (!((*p >= 'a' && *p <= 'z') || (*p >= '0' && *p <= '9')
                  || *p == '-'))
            {
                return 0;
            }

            while (p < last
                   && ((*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z')
                       || (*p >= '0' && *p <= '9') || *p == '-'
                       || *p == '+' || *p == '.'))
            {
                p++;
            }

            key = 0;
            break;
        }
    }
}


/* past the blanks that yajl skips between tokens */

static const unsigned char *
unico_json_blanks(const unsigned char *p, const unsigned char *last)
{
    while (p < last
           && (*p == ' ' || *p == '\n' || *p == '\r' || *p == '\t'
               || *p == '\v' || *p == '\f'))
    {
        p++;
    }

    return p;
}


/*
 * The closing quote of the string whose text starts at p, or NULL; *esc
 * is set if the text has backslashes.  A backslash skips the character
 * after it, which is all it takes to find the end of a valid string: the
 * text is checked later.  memchr() does the long runs.
 */

static const unsigned char *
unico_json_string_end(const unsigned char *p, const unsigned char *last,
    unsigned *esc)
{
    const unsigned char  *q, *b;

    q = (p < last) ? memchr(p, '"', (size_t) (last - p)) : NULL;

    for ( ;; ) {

        if (q == NULL) {
            return NULL;
        }

        b = (p < q) ? memchr(p, '\\', (size_t) (q - p)) : NULL;

        if (b == NULL) {
            return q;
        }

        *esc = 1;
        p = b + 2;

        if (p > q) {
            /* the quote was escaped */
            q = (p < last) ? memchr(p, '"', (size_t) (last - p)) : NULL;
        }
    }
}


/*
 * 1 when s[0 .. len), text without quotes or backslashes, is what yajl
 * takes in a string: no control characters, and UTF-8 as yajl checks it
 * (a lead byte and as many continuation bytes as it says, nothing more).
 */

static int
unico_json_text_valid(const unsigned char *s, size_t len)
{
    size_t         i, n;
    uint64_t       w;
    unsigned char  c;

    i = 0;

    while (i < len) {

        /* 8 bytes at a time while none is below 0x20 or above 0x7f */

        if (len - i >= 8) {
            memcpy(&w, s + i, 8);

            if ((((w - 0x2020202020202020ULL) | w)
                 & 0x8080808080808080ULL) == 0)
            {
                i += 8;
                continue;
            }
        }

        c = s[i++];

        if (c >= 0x20 && c < 0x80) {
            continue;
        }

        if (c < 0x20) {
            return 0;
        }

        n = ((c >> 5) == 0x06) ? 1
            : ((c >> 4) == 0x0e) ? 2
            : ((c >> 3) == 0x1e) ? 3 : 0;

        if (n == 0 || len - i < n) {
            return 0;
        }

        while (n--) {
            if ((s[i++] >> 6) != 0x02) {
                return 0;
            }
        }
    }

    return 1;
}


/*
 * Unescapes s[0 .. len), the raw text of a JSON string, in place, into
 * exactly the bytes yajl_string_decode() would give, and checks it as
 * yajl's lexer would.  Returns the new length, or (size_t) -1 if yajl
 * would have refused the string.  Every escape is longer than what it
 * stands for, so the writes never pass the reads.
 *
 * With min not NULL, nothing is written (d only counts): the bytes are
 * only measured, and *min is what unico_base64_decoded_min() would say of
 * them.
 */

static size_t
unico_json_unescape(unsigned char *s, size_t len, size_t *min)
{
    size_t          n, k, chars, pad;
    uint32_t        cp, lo;
    unsigned char  *d, *p, *b, *end, *t;
    unsigned char   tmp[4];

    d = s;
    p = s;
    end = s + len;
    chars = 0;
    pad = 0;

    for ( ;; ) {
        b = (p < end) ? memchr(p, '\\', (size_t) (end - p)) : NULL;
        n = (size_t) (((b != NULL) ? b : end) - p);

        if (!unico_json_text_valid(p, n)) {
            return (size_t) -1;
        }

        if (min != NULL) {
            unico_base64_count(p, n, &chars, &pad);

        } else if (d != p) {
            memmove(d, p, n);
        }

        d += n;

        if (b == NULL) {
            break;
        }

        p = b + 1;

        if (p == end) {
            return (size_t) -1;
        }

        t = (min != NULL) ? tmp : d;
        k = 1;

        switch (*p++) {

        case '"':
        case '\\':
        case '/':
            t[0] = p[-1];
            break;

        case 'b':
            t[0] = '\b';
            break;

        case 'f':
            t[0] = '\f';
            break;

        case 'n':
            t[0] = '\n';
            break;

        case 'r':
            t[0] = '\r';
            break;

        case 't':
            t[0] = '\t';
            break;

        case 'u':
            if (end - p < 4 || !unico_json_hex4(p, &cp)) {
                return (size_t) -1;
            }

            p += 4;

            /*
             * A high surrogate: as yajl does, a \u escape right after it
             * is joined to it, whatever it is, and without one it is '?'.
             */

            if ((cp & 0xfc00) == 0xd800) {

                if (end - p < 2 || p[0] != '\\' || p[1] != 'u') {
                    t[0] = '?';
                    break;
                }

                if (end - p < 6 || !unico_json_hex4(p + 2, &lo)) {
                    return (size_t) -1;
                }

                p += 6;

                cp = ((cp & 0x3f) << 10) | ((((cp >> 6) & 0x0f) + 1) << 16)
                     | (lo & 0x3ff);
            }

            k = unico_utf8_put(t, cp);
            break;

        default:
            return (size_t) -1;
        }

        if (min != NULL) {
            unico_base64_count(tmp, k, &chars, &pad);
        }

        d += k;
    }

    if (min != NULL) {
        chars -= (pad < 2) ? pad : 2;
        *min = chars / 4 * 3 + chars % 4 * 3 / 4;
    }

    return (size_t) (d - s);
}


static int
unico_json_hex4(const unsigned char *p, uint32_t *cp)
{
    size_t         i;
    uint32_t       v;
    unsigned char  c;

    v = 0;

    for (i = 0; i < 4; i++) {
        c = p[i];

        if (c >= '0' && c <= '9') {
            v = v << 4 | (uint32_t) (c - '0');

        } else if ((c | 0x20) >= 'a' && (c | 0x20) <= 'f') {
            v = v << 4 | (uint32_t) ((c | 0x20) - 'a' + 10);

        } else {
            return 0;
        }
    }

    *cp = v;

    return 1;
}


/* the UTF-8 of cp, as yajl writes it, NUL included; returns its length */

static size_t
unico_utf8_put(unsigned char *d, uint32_t cp)
{
    if (cp < 0x80) {
        d[0] = (unsigned char) cp;
        return 1;
    }

    if (cp < 0x800) {
        d[0] = (unsigned char) (cp >> 6 | 0xc0);
        d[1] = (unsigned char) ((cp & 0x3f) | 0x80);
        return 2;
    }

    if (cp < 0x10000) {
        d[0] = (unsigned char) (cp >> 12 | 0xe0);
        d[1] = (unsigned char) ((cp >> 6 & 0x3f) | 0x80);
        d[2] = (unsigned char) ((cp & 0x3f) | 0x80);
        return 3;
    }

    if (cp < 0x200000) {
        d[0] = (unsigned char) (cp >> 18 | 0xf0);
        d[1] = (unsigned char) ((cp >> 12 & 0x3f) | 0x80);
        d[2] = (unsigned char) ((cp >> 6 & 0x3f) | 0x80);
        d[3] = (unsigned char) ((cp & 0x3f) | 0x80);
        return 4;
    }

    d[0] = '?';

    return 1;
}


/* "image/jpeg" or "image/png", in any case, and nothing else */

static unico_image_type_e
unico_payload_mime(const unsigned char *s, size_t len)
{
    if (len == sizeof("image/jpeg") - 1
        && unico_ascii_caseeq(s, "image/jpeg", len))
    {
        return UNICO_IMAGE_JPEG;
    }

    if (len == sizeof("image/png") - 1
        && unico_ascii_caseeq(s, "image/png", len))
    {
        return UNICO_IMAGE_PNG;
    }

    return UNICO_IMAGE_NONE;
}


/* ASCII only, whatever the locale */

static int
unico_ascii_caseeq(const unsigned char *s, const char *lower, size_t len)
{
    size_t         i;
    unsigned char  c;

    for (i = 0; i < len; i++) {
        c = s[i];

        if (c >= 'A' && c <= 'Z') {
            c |= 0x20;
        }

        if (c != (unsigned char) lower[i]) {
            return 0;
        }
    }

    return 1;
}


static unico_image_type_e
unico_image_sniff(const unsigned char *p, size_t len)
{
    static const unsigned char  png[8] = {
        0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a
    };

    if (len >= 3 && p[0] == 0xff && p[1] == 0xd8 && p[2] == 0xff) {
        return UNICO_IMAGE_JPEG;
    }

    if (len >= sizeof(png) && memcmp(p, png, sizeof(png)) == 0) {
        return UNICO_IMAGE_PNG;
    }

    return UNICO_IMAGE_NONE;
}


const char *
unico_payload_strerror(unico_payload_rc_e rc)
{
    static const char  *keywords[] = {
        "ok",
        "bad_json",
        "not_object",
        "missing_field",
        "wrong_type",
        "duplicate_field",
        "bad_content_type",
        "bad_base64",
        "empty_image",
        "image_mismatch",
        "image_too_large",
        "no_memory"
    };

    if ((size_t) rc >= sizeof(keywords) / sizeof(keywords[0])) {
        return "unknown";
    }

    return keywords[rc];
}


const char *
unico_image_mime(unico_image_type_e type)
{
    switch (type) {

    case UNICO_IMAGE_JPEG:
        return "image/jpeg";

    case UNICO_IMAGE_PNG:
        return "image/png";

    case UNICO_IMAGE_NONE:
    default:
        return NULL;
    }
}


int
unico_uuid_valid(const unsigned char *p, size_t len)
{
    size_t         i;
    unsigned char  c;

    if (len != UNICO_UUID_LEN) {
        return 0;
    }

    for (i = 0; i < UNICO_UUID_LEN; i++) {
        c = p[i];

        if (i == 8 || i == 13 || i == 18 || i == 23) {

            if (c != '-') {
                return 0;
            }

            continue;
        }

        if (c >= '0' && c <= '9') {
            continue;
        }

        c |= 0x20;

        if (c < 'a' || c > 'f') {
            return 0;
        }
    }

    return 1;
}
