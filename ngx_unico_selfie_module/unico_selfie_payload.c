
/*
 * Copyright (C) ngx_unico_selfie_module authors
 * SPDX-License-Identifier: BSD-2-Clause
 *
 * The pure core: Unico's Get Selfie JSON, its base64 and the processId.
 * Plain C99, no nginx types, no global mutable state: every function is
 * reentrant and may run in any number of threads at once.
 */


#include <string.h>

#include <yajl/yajl_parse.h>

#include "unico_selfie_payload.h"


/*
 * The base64 decoder.
 *
 * Four tables, one per position in a quantum, map a character to a 32-bit
 * word that already holds its sextet shifted to where it lands among the
 * quantum's 3 output bytes, so a quantum costs 4 loads and 3 ORs.  The
 * words are laid out so that, on this host, storing one as 4 bytes writes
 * the 3 output bytes in order followed by byte 3, which is 0 for a sextet.
 * A character that is not a sextet sets its class in byte 3 instead, so a
 * single test of the ORed words tells whether a quantum needs the slow
 * path.  Where the byte order is unknown at compile time the same layout
 * as big-endian is used and the bytes are stored one by one.
 */

#if defined(__BYTE_ORDER__) && defined(__ORDER_LITTLE_ENDIAN__)             \
    && (__BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__)

#define UNICO_B64_SHIFT(i)      (8 * (i))
#define UNICO_B64_WORD_STORE    1

#elif defined(__BYTE_ORDER__) && defined(__ORDER_BIG_ENDIAN__)              \
    && (__BYTE_ORDER__ == __ORDER_BIG_ENDIAN__)

#define UNICO_B64_SHIFT(i)      (24 - 8 * (i))
#define UNICO_B64_WORD_STORE    1

#else

#define UNICO_B64_SHIFT(i)      (24 - 8 * (i))
#define UNICO_B64_WORD_STORE    0

#endif


/* the byte v at position i (0 .. 3) of a decoder word */
#define UNICO_B64_AT(i, v)      ((uint32_t) (v) << UNICO_B64_SHIFT(i))

/* classes of the characters that are not sextets, kept in byte 3 */
#define UNICO_B64_INVALID       0x01
#define UNICO_B64_BLANK         0x02
#define UNICO_B64_PAD           0x04

#define UNICO_B64_NOT_SEXTET    UNICO_B64_AT(3, 0xff)


/* the sextet of the character c, or 64 when c is not in the alphabet */
#define UNICO_B64_VAL(c)                                                      \
    (((c) >= 'A' && (c) <= 'Z') ? (c) - 'A'                                   \
     : ((c) >= 'a' && (c) <= 'z') ? (c) - 'a' + 26                            \
     : ((c) >= '0' && (c) <= '9') ? (c) - '0' + 52                            \
     : (c) == '+' ? 62 : (c) == '/' ? 63 : 64)

#define UNICO_B64_CLASS(c)                                                    \
    (((c) == '\r' || (c) == '\n' || (c) == '\t' || (c) == ' ')                \
     ? UNICO_B64_BLANK : (c) == '=' ? UNICO_B64_PAD : UNICO_B64_INVALID)

#define UNICO_B64_ENTRY(c, sextet)                                            \
    (UNICO_B64_VAL(c) < 64 ? (sextet) : UNICO_B64_AT(3, UNICO_B64_CLASS(c)))

/*
 * The sextet s = UNICO_B64_VAL(c) of each position of the quantum
 * "aaaaaabb bbbbcccc ccdddddd" split over the output bytes.
 */
#define UNICO_B64_E0(c)                                                       \
    UNICO_B64_ENTRY(c, UNICO_B64_AT(0, UNICO_B64_VAL(c) << 2))

#define UNICO_B64_E1(c)                                                       \
    UNICO_B64_ENTRY(c, UNICO_B64_AT(0, UNICO_B64_VAL(c) >> 4)                 \
                       | UNICO_B64_AT(1, (UNICO_B64_VAL(c) & 0x0f) << 4))

#define UNICO_B64_E2(c)                                                       \
    UNICO_B64_ENTRY(c, UNICO_B64_AT(1, UNICO_B64_VAL(c) >> 2)                 \
                       | UNICO_B64_AT(2, (UNICO_B64_VAL(c) & 0x03) << 6))

#define UNICO_B64_E3(c)                                                       \
    UNICO_B64_ENTRY(c, UNICO_B64_AT(2, UNICO_B64_VAL(c)))

/* e(0), e(1) ... e(255) */
#define UNICO_B64_R4(e, c)                                                    \
    e(c), e((c) + 1), e((c) + 2), e((c) + 3)
#define UNICO_B64_R16(e, c)                                                   \
    UNICO_B64_R4(e, c), UNICO_B64_R4(e, (c) + 4),                             \
    UNICO_B64_R4(e, (c) + 8), UNICO_B64_R4(e, (c) + 12)
#define UNICO_B64_R64(e, c)                                                   \
    UNICO_B64_R16(e, c), UNICO_B64_R16(e, (c) + 16),                          \
    UNICO_B64_R16(e, (c) + 32), UNICO_B64_R16(e, (c) + 48)
#define UNICO_B64_R256(e)                                                     \
    UNICO_B64_R64(e, 0), UNICO_B64_R64(e, 64),                                \
    UNICO_B64_R64(e, 128), UNICO_B64_R64(e, 192)


static const uint32_t  unico_b64_dec[4][256] = {
    { UNICO_B64_R256(UNICO_B64_E0) },
    { UNICO_B64_R256(UNICO_B64_E1) },
    { UNICO_B64_R256(UNICO_B64_E2) },
    { UNICO_B64_R256(UNICO_B64_E3) }
};


/* the 4 characters at p combined into a decoder word */
#define unico_b64_quantum(p)                                                  \
    (unico_b64_dec[0][(p)[0]] | unico_b64_dec[1][(p)[1]]                      \
     | unico_b64_dec[2][(p)[2]] | unico_b64_dec[3][(p)[3]])

/* the class of the character c: 0 for a sextet */
#define unico_b64_class(c)                                                    \
    (unico_b64_dec[0][c] >> UNICO_B64_SHIFT(3) & 0xff)

#define unico_b64_byte(x, i)                                                  \
    ((unsigned char) ((x) >> UNICO_B64_SHIFT(i)))

#define unico_b64_store3(d, x)                                                \
    do {                                                                      \
        (d)[0] = unico_b64_byte(x, 0);                                        \
        (d)[1] = unico_b64_byte(x, 1);                                        \
        (d)[2] = unico_b64_byte(x, 2);                                        \
    } while (0)

/*
 * Stores a quantum's 3 bytes, and maybe a 4th, scratch, byte after them:
 * only where that byte is known to be in dst's room and already read.
 */
#if (UNICO_B64_WORD_STORE)
#define unico_b64_store4(d, x)  memcpy(d, &(x), 4)
#else
#define unico_b64_store4(d, x)  unico_b64_store3(d, x)
#endif


/*
 * The decoder is table-driven: blocks of 16 characters (4 quanta, 12 bytes)
 * while more than 16 characters remain and none is a blank, a pad or
 * invalid; then single quanta up to the one that is not all sextets.  If
 * blanks start that one, as line breaks between quanta do (MIME's every 76
 * characters, PEM's every 64), they are skipped and the fast paths resume;
 * otherwise the slow path, unico_b64_slow(), takes one quantum that has
 * blanks inside, or the padding, or the end.
 *
 * In place: d - dst is at most 3/4 of p - src, so with dst <= src every
 * write lands at or before characters that have been read already.  The
 * scratch 4th byte of the word stores lands at most one byte past the last
 * output byte; the "more than 16 (or 4) characters remain" conditions keep
 * it below dst + unico_base64_decoded_max(len).
 *
 * Non-zero bits left over in the final, short quantum ("Zh==" instead of
 * "Zg==") are accepted and dropped, as most decoders do: a sender has no
 * reason to set them, and refusing them would refuse an image whose bytes
 * are all there.
 */

static size_t unico_b64_decode(unsigned char *dst, const unsigned char *src,
    size_t len, unsigned raw, const unsigned char **stop);
static int unico_b64_slow(unsigned char *d, const unsigned char **pp,
    const unsigned char *end, unsigned raw);


size_t
unico_base64_decode(unsigned char *dst, const unsigned char *src, size_t len)
{
    const unsigned char  *stop;

    return unico_b64_decode(dst, src, len, 0, &stop);
}


/*
 * The decoder proper.  With raw set, src is the raw text of a JSON string
 * without escapes, where CR, LF and TAB are not allowed: then the only
 * blank skipped is SP, and the others are refused as invalid.  That costs
 * nothing on the fast paths, which never see a blank.  On failure *stop is
 * where the quantum that failed starts: src[0 .. *stop) held only sextets
 * and blanks, and (*stop .. src + len) has not been written.
 */

static size_t
unico_b64_decode(unsigned char *dst, const unsigned char *src, size_t len,
    unsigned raw, const unsigned char **stop)
{
    int                   rc;
    uint32_t              x, x0, x1, x2, x3;
    unsigned char        *d;
    const unsigned char  *p, *end, *blocks_end, *quanta_end, *start;

    *stop = src;

    if (len == 0) {
        return 0;
    }

    d = dst;
    p = src;
    end = src + len;

    /* p < blocks_end: more than 16 characters remain; quanta_end: 4 */

    blocks_end = (len > 16) ? end - 16 : src;
    quanta_end = (len > 4) ? end - 4 : src;

    for ( ;; ) {

        while (p < blocks_end) {
            x0 = unico_b64_quantum(p);
            x1 = unico_b64_quantum(p + 4);
            x2 = unico_b64_quantum(p + 8);
            x3 = unico_b64_quantum(p + 12);

            if ((x0 | x1 | x2 | x3) & UNICO_B64_NOT_SEXTET) {
                break;
            }

            unico_b64_store4(d, x0);
            unico_b64_store4(d + 3, x1);
            unico_b64_store4(d + 6, x2);
            unico_b64_store4(d + 9, x3);

            p += 16;
            d += 12;
        }

        while (p < quanta_end) {
            x = unico_b64_quantum(p);

            if (x & UNICO_B64_NOT_SEXTET) {
                break;
            }

            unico_b64_store4(d, x);
            p += 4;
            d += 3;
        }

        start = p;

        while (p < end && unico_b64_class(*p) == UNICO_B64_BLANK
               && (*p == ' ' || !raw))
        {
            p++;
        }

        if (p == end) {
            return (size_t) (d - dst);
        }

        if (p != start) {
            continue;
        }

        rc = unico_b64_slow(d, &p, end, raw);

        if (rc < 0) {
            *stop = p;
            return (size_t) -1;
        }

        d += rc;

        if (p == end) {
            return (size_t) (d - dst);
        }
    }
}


/*
 * Decodes the next quantum from *pp, skipping blanks (only SP with raw
 * set), into d[0 .. 3).  Returns the number of bytes written: 3 for a
 * whole quantum, after which more may follow; 0, 1 or 2 for the final
 * one, short or padded, after which *pp is end.  Returns -1, leaving *pp
 * as it was, on an invalid character, a misplaced or incomplete padding,
 * or a single dangling sextet.
 */

static int
unico_b64_slow(unsigned char *d, const unsigned char **pp,
    const unsigned char *end, unsigned raw)
{
    uint32_t              x, k;
    unsigned int          n, need;
    unsigned char         q[4];
    const unsigned char  *p;

    p = *pp;
    n = 0;

    while (p < end) {
        k = unico_b64_class(*p);

        if (k == 0) {
            q[n++] = *p++;

            if (n == 4) {
                x = unico_b64_quantum(q);
                unico_b64_store3(d, x);
                *pp = p;
                return 3;
            }

            continue;
        }

        if (k == UNICO_B64_BLANK && (*p == ' ' || !raw)) {
            p++;
            continue;
        }

        if (k == UNICO_B64_PAD) {
            break;
        }

        return -1;
    }

    if (p < end) {

        /*
         * Padding: it must complete the quantum ("xx==", "xxx="), and
         * nothing but blanks may follow it.
         */

        if (n < 2) {
            return -1;
        }

        for (need = 4 - n; p < end; p++) {
            k = unico_b64_class(*p);

            if (k == UNICO_B64_PAD && need > 0) {
                need--;
                continue;
            }

            if (k != UNICO_B64_BLANK || (*p != ' ' && raw)) {
                return -1;
            }
        }

        if (need > 0) {
            return -1;
        }

    } else if (n == 1) {
        return -1;
    }

    *pp = end;

    if (n == 0) {
        return 0;
    }

    /* a short quantum: 2 sextets give 1 byte, 3 give 2 */

    for (k = n; k < 4; k++) {
        q[k] = 'A';
    }

    x = unico_b64_quantum(q);

    d[0] = unico_b64_byte(x, 0);

    if (n == 3) {
        d[1] = unico_b64_byte(x, 1);
    }

    return (int) n - 1;
}


/*
 * The fewest bytes that s[0 .. len) can decode to, if it is valid: exact
 * for valid base64, and only an estimate for invalid base64, which is
 * refused either way.  It reads the string once, without writing.
 */

static size_t
unico_b64_decoded_min(const unsigned char *s, size_t len)
{
    size_t  i, n, pad;

    n = 0;

    for (i = 0; i < len; i++) {
        n += (unico_b64_class(s[i]) != UNICO_B64_BLANK);
    }

    for (pad = 0, i = len; i > 0 && pad < 2; i--) {

        if (unico_b64_class(s[i - 1]) == UNICO_B64_BLANK) {
            continue;
        }

        if (s[i - 1] != '=') {
            break;
        }

        pad++;
    }

    /* n - pad sextets, 6 bits each, rounded down to whole bytes */

    n -= pad;

    return n / 4 * 3 + n % 4 * 3 / 4;
}


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
static void unico_b64_count(const unsigned char *s, size_t len,
    size_t *chars, size_t *pad);
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

        if (unico_b64_decoded_min(s, len) > ctx->max_image) {
            ctx->rc = UNICO_PAYLOAD_TOO_LARGE;
            return 0;
        }
    }

    n = unico_b64_decode(ctx->buf, s, len, raw, &stop);

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
 * only measured, and *min is what unico_b64_decoded_min() would say of
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
            unico_b64_count(p, n, &chars, &pad);

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
            unico_b64_count(tmp, k, &chars, &pad);
        }

        d += k;
    }

    if (min != NULL) {
        chars -= (pad < 2) ? pad : 2;
        *min = chars / 4 * 3 + chars % 4 * 3 / 4;
    }

    return (size_t) (d - s);
}


/*
 * Counts, in s[0 .. len) after what was counted before, the characters
 * that are not blanks and the '=' that end them (*pad): the streaming
 * form of unico_b64_decoded_min().
 */

static void
unico_b64_count(const unsigned char *s, size_t len, size_t *chars,
    size_t *pad)
{
    size_t  i;

    for (i = 0; i < len; i++) {

        if (unico_b64_class(s[i]) == UNICO_B64_BLANK) {
            continue;
        }

        (*chars)++;
        *pad = (s[i] == '=') ? *pad + 1 : 0;
    }
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
