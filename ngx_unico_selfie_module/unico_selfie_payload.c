
/*
 * Copyright (C) ngx_unico_selfie_module authors
 *
 * The pure core: Unico's Get Selfie JSON, its base64 and the processId.
 * Plain C99, no nginx types, no global mutable state: every function is
 * reentrant and may run in any number of threads at once.
 */


#include <stdlib.h>
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
    unico_payload_stream_t  *stream;  /* the stream that runs this parse */
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
    size_t max_image, const yajl_alloc_funcs *af, unico_image_t *out,
    unsigned fast);
static unico_payload_rc_e unico_payload_result(unico_payload_ctx_t *ctx,
    yajl_status status, unsigned char *image, unico_image_t *out);
static int unico_payload_stream_string(unico_payload_ctx_t *ctx);
static int unico_payload_stream_other(unico_payload_ctx_t *ctx,
    const unsigned char *value, size_t len);
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
    return unico_payload_run(buf, len, max_image, NULL, out, 1);
}


unico_payload_rc_e
unico_payload_parse_alloc(unsigned char *buf, size_t len, size_t max_image,
    const yajl_alloc_funcs *af, unico_image_t *out)
{
    return unico_payload_run(buf, len, max_image, af, out, 1);
}


unico_payload_rc_e
unico_payload_parse_reference(unsigned char *buf, size_t len,
    size_t max_image, unico_image_t *out)
{
    return unico_payload_run(buf, len, max_image, NULL, out, 0);
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
    const yajl_alloc_funcs *af, unico_image_t *out, unsigned fast)
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

    hand = yajl_alloc(&unico_payload_callbacks, (yajl_alloc_funcs *) af,
                      &ctx);
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

    return unico_payload_result(&ctx, status, buf, out);
}


/* the outcome of a parse that yajl has finished with status */

static unico_payload_rc_e
unico_payload_result(unico_payload_ctx_t *ctx, yajl_status status,
    unsigned char *image, unico_image_t *out)
{
    switch (status) {

    case yajl_status_ok:
        break;

    case yajl_status_client_canceled:
        return (ctx->rc != UNICO_PAYLOAD_OK) ? ctx->rc
                                             : UNICO_PAYLOAD_BAD_JSON;

    case yajl_status_error:
    default:
        return UNICO_PAYLOAD_BAD_JSON;
    }

    if (!ctx->file_seen || !ctx->type_seen) {
        return UNICO_PAYLOAD_MISSING_FIELD;
    }

    if (unico_image_sniff(image, ctx->len) != ctx->type) {
        return UNICO_PAYLOAD_IMAGE_MISMATCH;
    }

    out->data = image;
    out->len = ctx->len;
    out->type = ctx->type;

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

        if (ctx->stream != NULL) {
            return unico_payload_stream_other(ctx, value, len);
        }

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

    if (ctx->stream != NULL) {
        return unico_payload_stream_string(ctx);
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


/*
 * The pool allocator: a 16-byte header before each block holds its size,
 * so that realloc knows how much to copy.
 */

#define UNICO_POOL_HDR  16


static void *unico_pool_malloc(void *ctx, size_t size);
static void *unico_pool_realloc(void *ctx, void *ptr, size_t size);
static void unico_pool_free(void *ctx, void *ptr);


void
unico_pool_alloc_init(unico_pool_alloc_t *pa, unico_pool_alloc_pt alloc,
    void *pool)
{
    pa->funcs.malloc = unico_pool_malloc;
    pa->funcs.realloc = unico_pool_realloc;
    pa->funcs.free = unico_pool_free;
    pa->funcs.ctx = pa;
    pa->alloc = alloc;
    pa->pool = pool;
}


static void *
unico_pool_malloc(void *ctx, size_t size)
{
    unsigned char       *p;
    unico_pool_alloc_t  *pa = ctx;

    if (size > (size_t) -1 - UNICO_POOL_HDR) {
        return NULL;
    }

    p = pa->alloc(pa->pool, size + UNICO_POOL_HDR);
    if (p == NULL) {
        return NULL;
    }

    memcpy(p, &size, sizeof(size_t));

    return p + UNICO_POOL_HDR;
}


static void *
unico_pool_realloc(void *ctx, void *ptr, size_t size)
{
    size_t          old;
    unsigned char  *p;

    if (ptr == NULL) {
        return unico_pool_malloc(ctx, size);
    }

    memcpy(&old, (unsigned char *) ptr - UNICO_POOL_HDR, sizeof(size_t));

    if (size <= old) {
        return ptr;
    }

    /* a pool cannot grow a block: a new one, the old one left to the pool */

    p = unico_pool_malloc(ctx, size);
    if (p == NULL) {
        return NULL;
    }

    memcpy(p, ptr, old);

    return p;
}


static void
unico_pool_free(void *ctx, void *ptr)
{
    (void) ctx;
    (void) ptr;
}


/*
 * The stream.
 *
 * Phases: SCAN follows the envelope up to the opening quote of the
 * top-level fileContents string, keeping the bytes (the prefix) in env;
 * STRING decodes that string's text as it arrives; TAIL hands every byte
 * from its closing quote on to yajl; RAW keeps the whole body in env for
 * unico_payload_parse_alloc() (the fallback); DONE knows the outcome and
 * ignores the rest.
 *
 * The scanner is unico_payload_locate() one byte at a time: it follows
 * strings, depth and keys at depth 1, and gives up (RAW) where that gives
 * up.
 *
 * The string decoder checks the text as unico_json_unescape() and
 * unico_json_text_valid() do, unescapes it, and feeds every byte of the
 * unescaped text U to a base64 decoder of the same dialect as
 * unico_base64_decode() (blanks skipped anywhere, '=' only at the end and
 * completing the last quantum, no dangling sextet), which also counts what
 * unico_base64_decoded_min() would count.  The outcome of the string is
 * then that of unico_payload_fast() and unico_payload_image() on it:
 * bad_json if the text is not what yajl takes, else image_too_large if U
 * may decode to more than max_image and surely does, else bad_base64,
 * empty_image, image_too_large as the decoder says.  Whole quanta of
 * sextets, nearly all of an image, go through unico_base64_decode_quanta()
 * (SSSE3/AVX2) and skip the byte-by-byte machine.
 */

#define UNICO_STREAM_INLINE  256

#define UNICO_JSON_BLANK(c)                                                   \
    ((c) == ' ' || (c) == '\n' || (c) == '\r' || (c) == '\t'                  \
     || (c) == '\v' || (c) == '\f')


typedef enum {
    UNICO_PHASE_SCAN = 0,
    UNICO_PHASE_STRING,
    UNICO_PHASE_TAIL,
    UNICO_PHASE_RAW,
    UNICO_PHASE_DONE
} unico_stream_phase_e;


typedef enum {
    UNICO_SCAN_START = 0,                     /* before '{' */
    UNICO_SCAN_TOKEN,                         /* between tokens */
    UNICO_SCAN_STR,                           /* in a string */
    UNICO_SCAN_STR_ESC,                       /* after a backslash */
    UNICO_SCAN_LITERAL,                       /* true, 12, ... */
    UNICO_SCAN_COLON,                         /* after "fileContents" */
    UNICO_SCAN_VALUE                          /* after its ':' */
} unico_scan_state_e;


typedef enum {
    UNICO_STR_TEXT = 0,
    UNICO_STR_ESC,                            /* after '\' */
    UNICO_STR_HEX,                            /* \u and cnt digits */
    UNICO_STR_SURROGATE,                      /* after \uD8xx: '\'? */
    UNICO_STR_SURROGATE_U,                    /* after \uD8xx\: 'u'? */
    UNICO_STR_HEX_LOW                         /* \uD8xx\u and cnt digits */
} unico_str_state_e;


struct unico_payload_stream_s {
    unico_payload_ctx_t    ctx;
    yajl_handle            hand;
    yajl_alloc_funcs       af;
    unsigned               af_set:1;

    unsigned char         *out;
    size_t                 cap;
    size_t                 max_image;
    size_t                 hint;

    unico_stream_phase_e   phase;
    unico_payload_rc_e     rc;            /* the outcome, in DONE */

    unsigned char         *env;           /* the prefix, or the raw body */
    size_t                 env_len;
    size_t                 env_cap;

    /* the scanner */
    unico_scan_state_e     scan;
    size_t                 depth;
    size_t                 klen;
    unsigned               key:1;         /* a key may come next */
    unsigned               is_key:1;      /* this string may be a key */
    unsigned               kmatch:1;      /* it is fileContents so far */
    unsigned               found:1;       /* its value's quote is taken */
    unsigned               fell_back:1;

    /* the string decoder */
    unico_str_state_e      str;
    unsigned               need;          /* UTF-8 continuation bytes */
    unsigned               cnt;           /* hex digits so far */
    uint32_t               cp;
    uint32_t               hi;            /* the high surrogate */
    unsigned               json_bad:1;
    unsigned               b64_bad:1;
    size_t                 ulen;          /* unescaped bytes */
    size_t                 chars;         /* non-blank ones */
    size_t                 cpad;          /* the '=' that end them */
    size_t                 sextets;
    size_t                 pads;
    size_t                 n;             /* decoded bytes */
    uint32_t               acc;
    unsigned               bits;

    unsigned char          inline_env[UNICO_STREAM_INLINE];
};


static void *unico_stream_alloc(unico_payload_stream_t *st, size_t size);
static void unico_stream_free(unico_payload_stream_t *st, void *p);
static int unico_stream_keep(unico_payload_stream_t *st,
    const unsigned char *p, size_t len);
static size_t unico_stream_scan(unico_payload_stream_t *st,
    const unsigned char *p, size_t len);
static void unico_stream_start(unico_payload_stream_t *st);
static size_t unico_stream_text(unico_payload_stream_t *st,
    const unsigned char *p, size_t len);
static int unico_stream_byte(unico_payload_stream_t *st, unsigned char c);
static void unico_stream_emit(unico_payload_stream_t *st, unsigned char c);
static void unico_stream_yajl(unico_payload_stream_t *st,
    const unsigned char *p, size_t len);
static void unico_stream_release(unico_payload_stream_t *st);


static void *
unico_stream_alloc(unico_payload_stream_t *st, size_t size)
{
    if (st->af_set) {
        return st->af.malloc(st->af.ctx, size);
    }

    return malloc(size);
}


static void
unico_stream_free(unico_payload_stream_t *st, void *p)
{
    if (p == NULL) {
        return;
    }

    if (st->af_set) {
        st->af.free(st->af.ctx, p);
        return;
    }

    free(p);
}


unico_payload_stream_t *
unico_payload_stream_create(unsigned char *out, size_t out_cap,
    size_t max_image, size_t body_hint, const yajl_alloc_funcs *af)
{
    unico_payload_stream_t  *st;

    st = (af != NULL) ? af->malloc(af->ctx, sizeof(unico_payload_stream_t))
                      : malloc(sizeof(unico_payload_stream_t));
    if (st == NULL) {
        return NULL;
    }

    memset(st, 0, sizeof(unico_payload_stream_t));

    if (af != NULL) {
        st->af = *af;
        st->af_set = 1;
    }

    st->out = out;
    st->cap = out_cap;
    st->max_image = max_image;
    st->hint = body_hint;

    st->env = st->inline_env;
    st->env_cap = UNICO_STREAM_INLINE;

    st->phase = UNICO_PHASE_SCAN;
    st->scan = UNICO_SCAN_START;
    st->rc = UNICO_PAYLOAD_OK;

    st->ctx.buf = out;
    st->ctx.max_image = max_image;
    st->ctx.stream = st;

    return st;
}


int
unico_payload_stream_fell_back(const unico_payload_stream_t *st)
{
    return st->fell_back;
}


/* appends to env, growing it (to the hint first, then doubling) */

static int
unico_stream_keep(unico_payload_stream_t *st, const unsigned char *p,
    size_t len)
{
    size_t          cap;
    unsigned char  *env;

    if (len > st->env_cap - st->env_len) {

        if (len > (size_t) -1 / 2 - st->env_len) {
            return 0;
        }

        cap = st->env_cap * 2;

        if (st->hint + 1 > cap) {
            cap = st->hint + 1;
        }

        if (st->env_len + len > cap) {
            cap = (st->env_len + len) * 2;
        }

        env = unico_stream_alloc(st, cap);
        if (env == NULL) {
            return 0;
        }

        memcpy(env, st->env, st->env_len);

        if (st->env != st->inline_env) {
            unico_stream_free(st, st->env);
        }

        st->env = env;
        st->env_cap = cap;
    }

    memcpy(st->env + st->env_len, p, len);
    st->env_len += len;

    return 1;
}


unico_payload_rc_e
unico_payload_stream_feed(unico_payload_stream_t *st,
    const unsigned char *chunk, size_t len)
{
    size_t  n;

    while (len > 0) {

        switch (st->phase) {

        case UNICO_PHASE_SCAN:
            n = unico_stream_scan(st, chunk, len);

            if (!unico_stream_keep(st, chunk, n)) {
                goto nomem;
            }

            chunk += n;
            len -= n;

            if (st->found) {
                unico_stream_start(st);

                if (st->phase == UNICO_PHASE_DONE
                    && st->rc == UNICO_PAYLOAD_NO_MEMORY)
                {
                    return UNICO_PAYLOAD_NO_MEMORY;
                }
            }

            break;

        case UNICO_PHASE_STRING:
            n = unico_stream_text(st, chunk, len);
            chunk += n;
            len -= n;
            break;

        case UNICO_PHASE_TAIL:
            unico_stream_yajl(st, chunk, len);
            return (st->rc == UNICO_PAYLOAD_NO_MEMORY)
                   ? UNICO_PAYLOAD_NO_MEMORY : UNICO_PAYLOAD_OK;

        case UNICO_PHASE_RAW:
            if (!unico_stream_keep(st, chunk, len)) {
                goto nomem;
            }

            return UNICO_PAYLOAD_OK;

        case UNICO_PHASE_DONE:
        default:
            return (st->rc == UNICO_PAYLOAD_NO_MEMORY)
                   ? UNICO_PAYLOAD_NO_MEMORY : UNICO_PAYLOAD_OK;
        }
    }

    return UNICO_PAYLOAD_OK;

nomem:

    unico_stream_release(st);
    st->phase = UNICO_PHASE_DONE;
    st->rc = UNICO_PAYLOAD_NO_MEMORY;

    return UNICO_PAYLOAD_NO_MEMORY;
}


/*
 * The scanner: takes bytes up to and with the opening quote of the
 * fileContents string, or all of them; a byte it does not follow turns the
 * stream to RAW (after which the rest of the chunk is kept by the caller's
 * loop).  Returns the bytes taken.
 */

static size_t
unico_stream_scan(unico_payload_stream_t *st, const unsigned char *p,
    size_t len)
{
    size_t         i;
    unsigned char  c;

    static const char  name[] = "fileContents";

    for (i = 0; i < len; i++) {
        c = p[i];

        switch (st->scan) {

        case UNICO_SCAN_START:
            if (UNICO_JSON_BLANK(c)) {
                continue;
            }

            if (c != '{') {
                goto raw;
            }

            st->depth = 1;
            st->key = 1;
            st->scan = UNICO_SCAN_TOKEN;
            continue;

        case UNICO_SCAN_LITERAL:
            if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z')
                || (c >= '0' && c <= '9') || c == '-' || c == '+' || c == '.')
            {
                continue;
            }

            st->key = 0;
            st->scan = UNICO_SCAN_TOKEN;

            /* fall through */

        case UNICO_SCAN_TOKEN:
            if (UNICO_JSON_BLANK(c)) {
                continue;
            }

            switch (c) {

            case '{':
            case '[':
                st->depth++;
                st->key = 0;
                continue;

            case '}':
            case ']':
                if (--st->depth == 0) {
                    goto raw;
                }

                st->key = 0;
                continue;

            case ',':
                st->key = (st->depth == 1);
                continue;

            case ':':
                st->key = 0;
                continue;

            case '"':
                st->is_key = st->key;
                st->kmatch = 1;
                st->klen = 0;
                st->scan = UNICO_SCAN_STR;
                continue;

            default:
                if (!((c >= 'a' && c <= 'z') || (c >= '0' && c <= '9')
                      || c == '-'))
                {
                    goto raw;
                }

                st->scan = UNICO_SCAN_LITERAL;
                continue;
            }

        case UNICO_SCAN_STR:
            if (c == '\\') {
                st->kmatch = 0;
                st->scan = UNICO_SCAN_STR_ESC;
                continue;
            }

            if (c == '"') {

                if (st->is_key && st->kmatch
                    && st->klen == sizeof(name) - 1)
                {
                    st->scan = UNICO_SCAN_COLON;

                } else {
                    st->key = 0;
                    st->scan = UNICO_SCAN_TOKEN;
                }

                continue;
            }

            if (st->klen >= sizeof(name) - 1
                || c != (unsigned char) name[st->klen])
            {
                st->kmatch = 0;
            }

            st->klen++;
            continue;

        case UNICO_SCAN_STR_ESC:
            st->scan = UNICO_SCAN_STR;
            continue;

        case UNICO_SCAN_COLON:
            if (UNICO_JSON_BLANK(c)) {
                continue;
            }

            if (c != ':') {
                goto raw;
            }

            st->scan = UNICO_SCAN_VALUE;
            continue;

        case UNICO_SCAN_VALUE:
        default:
            if (UNICO_JSON_BLANK(c)) {
                continue;
            }

            if (c != '"') {
                goto raw;
            }

            st->found = 1;

            return i + 1;
        }
    }

    return len;

raw:

    st->phase = UNICO_PHASE_RAW;
    st->fell_back = 1;

    return i;
}


/*
 * At the opening quote: yajl parses the prefix and must be waiting for the
 * value of the top-level fileContents; then the string's text is decoded
 * as it comes.  Otherwise RAW (yajl saw something else: the full parse
 * decides) or DONE (the prefix already decides: a syntax error, a bad
 * contentType, a duplicate).
 */

static void
unico_stream_start(unico_payload_stream_t *st)
{
    yajl_status    status;
    unico_image_t  img;

    st->hand = yajl_alloc(&unico_payload_callbacks,
                          st->af_set ? &st->af : NULL, &st->ctx);
    if (st->hand == NULL) {
        st->phase = UNICO_PHASE_DONE;
        st->rc = UNICO_PAYLOAD_NO_MEMORY;
        return;
    }

    status = yajl_parse(st->hand, st->env, st->env_len);

    if (status == yajl_status_ok
        && (st->ctx.depth != 1 || st->ctx.field != UNICO_FIELD_FILE))
    {
        yajl_free(st->hand);
        st->hand = NULL;
        memset(&st->ctx, 0, sizeof(unico_payload_ctx_t));
        st->ctx.buf = st->out;
        st->ctx.max_image = st->max_image;
        st->ctx.stream = st;
        st->phase = UNICO_PHASE_RAW;
        st->fell_back = 1;
        return;
    }

    if (status != yajl_status_ok) {
        st->rc = unico_payload_result(&st->ctx, status, st->out,
                                      &img);
        unico_stream_release(st);
        st->phase = UNICO_PHASE_DONE;
        return;
    }

    /* the prefix is no longer needed */

    if (st->env != st->inline_env) {
        unico_stream_free(st, st->env);
        st->env = st->inline_env;
        st->env_cap = UNICO_STREAM_INLINE;
    }

    st->env_len = 0;
    st->ctx.fast_next = 1;
    st->phase = UNICO_PHASE_STRING;
    st->str = UNICO_STR_TEXT;
}


/*
 * The string's text: whole quanta in bulk when the decoder is between
 * quanta, byte by byte otherwise; at the closing quote, the rest goes to
 * yajl.  Returns the bytes taken.
 */

static size_t
unico_stream_text(unico_payload_stream_t *st, const unsigned char *p,
    size_t len)
{
    size_t         i, k, room;
    unsigned char  c;

    i = 0;

    while (i < len) {

        if (st->str == UNICO_STR_TEXT && st->need == 0
            && st->sextets % 4 == 0 && st->pads == 0 && !st->b64_bad)
        {
            room = (st->n < st->cap) ? st->cap - st->n : 0;

            k = unico_base64_decode_quanta(st->out + st->n, room, p + i,
                                           len - i);
            i += k;
            st->n += k / 4 * 3;
            st->sextets += k;
            st->chars += k;
            st->ulen += k;

            if (k > 0) {
                st->cpad = 0;
            }

            if (i == len) {
                break;
            }
        }

        c = p[i];

        if (unico_stream_byte(st, c)) {
            /* the closing quote: it and the rest go to yajl */
            st->phase = UNICO_PHASE_TAIL;
            unico_stream_yajl(st, p + i, len - i);
            return len;
        }

        i++;
    }

    return len;
}


/*
 * One byte of the string's text, not a closing quote in TEXT state.  A
 * byte that ends an escape short (a non-hex digit in \u, a byte after a
 * lone high surrogate) is taken again in TEXT state, as the full parse
 * reads on after it.  Returns 1, without taking it, for the closing quote.
 */

static int
unico_stream_byte(unico_payload_stream_t *st, unsigned char c)
{
    uint32_t       cp;
    size_t         k, i;
    unsigned char  u[4];

again:

    switch (st->str) {

    case UNICO_STR_TEXT:

        if (st->need > 0) {

            if ((c >> 6) == 0x02) {
                st->need--;
                unico_stream_emit(st, c);
                return 0;
            }

            st->json_bad = 1;
            st->need = 0;
        }

        if (c == '"') {
            return 1;
        }

        if (c == '\\') {
            st->str = UNICO_STR_ESC;
            return 0;
        }

        if (c < 0x20) {
            st->json_bad = 1;

        } else if (c >= 0x80) {
            st->need = ((c >> 5) == 0x06) ? 1
                       : ((c >> 4) == 0x0e) ? 2
                       : ((c >> 3) == 0x1e) ? 3 : 0;

            if (st->need == 0) {
                st->json_bad = 1;
            }
        }

        unico_stream_emit(st, c);
        return 0;

    case UNICO_STR_ESC:
        st->str = UNICO_STR_TEXT;

        switch (c) {

        case '"':
        case '\\':
        case '/':
            break;

        case 'b':
            c = '\b';
            break;

        case 'f':
            c = '\f';
            break;

        case 'n':
            c = '\n';
            break;

        case 'r':
            c = '\r';
            break;

        case 't':
            c = '\t';
            break;

        case 'u':
            st->str = UNICO_STR_HEX;
            st->cnt = 0;
            st->cp = 0;
            return 0;

        default:
            st->json_bad = 1;
            return 0;
        }

        unico_stream_emit(st, c);
        return 0;

    case UNICO_STR_HEX:
    case UNICO_STR_HEX_LOW:

        if (c >= '0' && c <= '9') {
            st->cp = st->cp << 4 | (uint32_t) (c - '0');

        } else if ((c | 0x20) >= 'a' && (c | 0x20) <= 'f') {
            st->cp = st->cp << 4 | (uint32_t) ((c | 0x20) - 'a' + 10);

        } else {
            st->json_bad = 1;
            st->str = UNICO_STR_TEXT;
            goto again;
        }

        if (++st->cnt < 4) {
            return 0;
        }

        cp = st->cp;

        if (st->str == UNICO_STR_HEX && (cp & 0xfc00) == 0xd800) {
            st->hi = cp;
            st->str = UNICO_STR_SURROGATE;
            return 0;
        }

        if (st->str == UNICO_STR_HEX_LOW) {
            cp = ((st->hi & 0x3f) << 10)
                 | ((((st->hi >> 6) & 0x0f) + 1) << 16) | (cp & 0x3ff);
        }

        st->str = UNICO_STR_TEXT;

        k = unico_utf8_put(u, cp);

        for (i = 0; i < k; i++) {
            unico_stream_emit(st, u[i]);
        }

        return 0;

    case UNICO_STR_SURROGATE:
        if (c == '\\') {
            st->str = UNICO_STR_SURROGATE_U;
            return 0;
        }

        unico_stream_emit(st, '?');
        st->str = UNICO_STR_TEXT;
        goto again;

    case UNICO_STR_SURROGATE_U:
    default:
        if (c == 'u') {
            st->str = UNICO_STR_HEX_LOW;
            st->cnt = 0;
            st->cp = 0;
            return 0;
        }

        /* '?' for the lone surrogate, then c as an escape */

        unico_stream_emit(st, '?');
        st->str = UNICO_STR_ESC;
        goto again;
    }
}


/* one byte of the unescaped text to the counters and the decoder */

static void
unico_stream_emit(unico_payload_stream_t *st, unsigned char c)
{
    int  v;

    st->ulen++;

    if (unico_base64_blank(c)) {
        return;
    }

    st->chars++;
    st->cpad = (c == '=') ? st->cpad + 1 : 0;

    if (st->b64_bad) {
        return;
    }

    if (c == '=') {
        st->pads++;
        return;
    }

    v = unico_base64_sextet(c);

    if (st->pads > 0 || v < 0) {
        st->b64_bad = 1;
        return;
    }

    st->sextets++;
    st->acc = st->acc << 6 | (uint32_t) v;
    st->bits += 6;

    if (st->bits >= 8) {
        st->bits -= 8;

        if (st->n < st->cap) {
            st->out[st->n] = (unsigned char) (st->acc >> st->bits);
        }

        st->n++;
        st->acc &= (1u << st->bits) - 1;
    }
}


/*
 * yajl's empty string in place of fileContents: the outcome of the string
 * decoded so far, as unico_payload_fast() would have it.
 */

static int
unico_payload_stream_string(unico_payload_ctx_t *ctx)
{
    size_t                   min;
    unico_payload_stream_t  *st = ctx->stream;

    ctx->field = UNICO_FIELD_NONE;

    if (st->json_bad || st->str != UNICO_STR_TEXT || st->need > 0) {
        ctx->rc = UNICO_PAYLOAD_BAD_JSON;
        return 0;
    }

    min = unico_base64_count_min(st->chars, st->cpad);

    if (unico_base64_decoded_max(st->ulen) > st->max_image
        && min > st->max_image)
    {
        ctx->rc = UNICO_PAYLOAD_TOO_LARGE;
        return 0;
    }

    if (st->b64_bad || st->sextets % 4 == 1
        || (st->pads != 0
            && !(st->sextets % 4 == 2 && st->pads == 2)
            && !(st->sextets % 4 == 3 && st->pads == 1)))
    {
        ctx->rc = UNICO_PAYLOAD_BAD_BASE64;
        return 0;
    }

    if (st->n == 0) {
        ctx->rc = UNICO_PAYLOAD_EMPTY_IMAGE;
        return 0;
    }

    if (st->n > st->max_image) {
        ctx->rc = UNICO_PAYLOAD_TOO_LARGE;
        return 0;
    }

    if (st->n > st->cap) {
        ctx->rc = UNICO_PAYLOAD_NO_MEMORY;
        return 0;
    }

    ctx->len = st->n;

    return 1;
}


/*
 * A top-level fileContents value that yajl found itself (its key has
 * escapes, so the scanner did not): decoded into a buffer of its own, as
 * the stream's out may be too small for it.  The body is one with two
 * fileContents then, which fails either way; only the reason matters.
 */

static int
unico_payload_stream_other(unico_payload_ctx_t *ctx,
    const unsigned char *value, size_t len)
{
    int                      rc;
    unsigned char           *buf;
    unico_payload_stream_t  *st = ctx->stream;

    buf = unico_stream_alloc(st, unico_base64_decoded_max(len) + 1);
    if (buf == NULL) {
        ctx->rc = UNICO_PAYLOAD_NO_MEMORY;
        return 0;
    }

    ctx->buf = buf;
    rc = unico_payload_image(ctx, value, len, 0);
    ctx->buf = st->out;

    unico_stream_free(st, buf);

    ctx->len = 0;

    return rc;
}


/* the tail: to yajl, until it knows the outcome */

static void
unico_stream_yajl(unico_payload_stream_t *st, const unsigned char *p,
    size_t len)
{
    yajl_status    status;
    unico_image_t  img;

    status = yajl_parse(st->hand, p, len);

    if (status != yajl_status_ok) {
        st->rc = unico_payload_result(&st->ctx, status, st->out,
                                      &img);
        unico_stream_release(st);
        st->phase = UNICO_PHASE_DONE;
    }
}


unico_payload_rc_e
unico_payload_stream_finish(unico_payload_stream_t *st, unico_image_t *out)
{
    yajl_status          status;
    unico_image_t        img;
    unico_payload_rc_e   rc;

    out->data = NULL;
    out->len = 0;
    out->type = UNICO_IMAGE_NONE;

    switch (st->phase) {

    case UNICO_PHASE_SCAN:
    case UNICO_PHASE_RAW:

        /* the fallback: the whole body was kept */

        st->fell_back = 1;

        rc = unico_payload_run(st->env, st->env_len, st->max_image,
                               st->af_set ? &st->af : NULL, &img, 1);

        if (rc == UNICO_PAYLOAD_OK) {

            if (img.len > st->cap) {
                rc = UNICO_PAYLOAD_NO_MEMORY;

            } else {
                memmove(st->out, img.data, img.len);
                *out = img;
                out->data = st->out;
            }
        }

        break;

    case UNICO_PHASE_STRING:

        /* the body ended in the string: yajl would say so */

        rc = UNICO_PAYLOAD_BAD_JSON;
        break;

    case UNICO_PHASE_TAIL:
        status = yajl_complete_parse(st->hand);

        if (st->ctx.fast_next || st->ctx.fast_lost) {
            /* cannot happen: yajl agreed on the prefix */
            rc = UNICO_PAYLOAD_BAD_JSON;
            break;
        }

        rc = unico_payload_result(&st->ctx, status, st->out, out);
        break;

    case UNICO_PHASE_DONE:
    default:
        rc = st->rc;
        break;
    }

    unico_stream_release(st);
    st->phase = UNICO_PHASE_DONE;
    st->rc = rc;

    if (rc != UNICO_PAYLOAD_OK) {
        out->data = NULL;
        out->len = 0;
        out->type = UNICO_IMAGE_NONE;
    }

    return rc;
}


static void
unico_stream_release(unico_payload_stream_t *st)
{
    if (st->hand != NULL) {
        yajl_free(st->hand);
        st->hand = NULL;
    }

    if (st->env != st->inline_env) {
        unico_stream_free(st, st->env);
        st->env = st->inline_env;
        st->env_cap = UNICO_STREAM_INLINE;
    }

    st->env_len = 0;
}


void
unico_payload_stream_destroy(unico_payload_stream_t *st)
{
    if (st == NULL) {
        return;
    }

    unico_stream_release(st);

    if (st->af_set) {
        st->af.free(st->af.ctx, st);
        return;
    }

    free(st);
}
