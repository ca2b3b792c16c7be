
/*
 * Copyright (C) ngx_unico_selfie_module authors
 *
 * Unit tests of the pure core, unico_selfie_payload.c, printing TAP.
 *
 *     test_payload <fixtures dir>
 *
 * Every buffer handed to the code under test is malloc()ed to its exact
 * size, so that AddressSanitizer sees any read or write past its end.
 */


#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "unico_selfie_payload.h"


#define MAX_IMAGE  (4 * 1024 * 1024)


typedef struct {
    char    *data;
    size_t   len;
    size_t   size;
} sb_t;


typedef struct {
    const char          *name;
    unico_image_type_e   type;
    unsigned char       *data;
    size_t               len;
} fixture_t;


typedef enum {
    ENC_PLAIN = 0,       /* one line, padded */
    ENC_UNPADDED,        /* one line, '=' dropped */
    ENC_SLASH,           /* every '/' written \/ */
    ENC_U002F,           /* every '/' written \u002F */
    ENC_LF76,            /* \n every 76 characters */
    ENC_CRLF76,          /* \r\n every 76 characters */
    ENC_MIXED            /* \/ and \u002f and \r\n every 64 and blanks */
} enc_e;


#include "tap.h"


static void
sb_addn(sb_t *sb, const char *s, size_t n)
{
    if (sb->len + n + 1 > sb->size) {
        sb->size = (sb->len + n + 1) * 2;
        sb->data = realloc(sb->data, sb->size);
        if (sb->data == NULL) {
            die("out of memory");
        }
    }

    memcpy(sb->data + sb->len, s, n);
    sb->len += n;
    sb->data[sb->len] = '\0';
}


static void
sb_add(sb_t *sb, const char *s)
{
    sb_addn(sb, s, strlen(s));
}


static void
sb_free(sb_t *sb)
{
    free(sb->data);
    sb->data = NULL;
    sb->len = 0;
    sb->size = 0;
}


static unsigned char *
read_file(const char *dir, const char *name, size_t *len)
{
    char            path[4096];
    long            size;
    FILE           *f;
    unsigned char  *data;

    snprintf(path, sizeof(path), "%s/%s", dir, name);

    f = fopen(path, "rb");
    if (f == NULL) {
        return NULL;
    }

    if (fseek(f, 0, SEEK_END) != 0 || (size = ftell(f)) < 0
        || fseek(f, 0, SEEK_SET) != 0)
    {
        fclose(f);
        return NULL;
    }

    data = xmalloc((size_t) size);

    if (fread(data, 1, (size_t) size, f) != (size_t) size) {
        fclose(f);
        free(data);
        return NULL;
    }

    fclose(f);
    *len = (size_t) size;

    return data;
}


/*
 * the JSON string content (no quotes) of data's base64, as enc says: the
 * module's encoder (unico_selfie_base64.c), then the escapes and breaks
 */

static void
b64_json(sb_t *sb, const unsigned char *data, size_t len, enc_e enc)
{
    size_t          i, n, col;
    unsigned char  *out;

    out = xmalloc(unico_base64_encoded_len(len) + 1);
    n = unico_base64_encode(out, data, len);

    col = 0;

    for (i = 0; i < n; i++) {

        if (out[i] == '=' && enc == ENC_UNPADDED) {
            continue;
        }

        if (out[i] == '/' && enc == ENC_SLASH) {
            sb_add(sb, "\\/");

        } else if (out[i] == '/' && enc == ENC_U002F) {
            sb_add(sb, "\\u002F");

        } else if (out[i] == '/' && enc == ENC_MIXED) {
            sb_add(sb, (col & 1) ? "\\u002f" : "\\/");

        } else {
            sb_addn(sb, (const char *) &out[i], 1);
        }

        col++;

        if (enc == ENC_LF76 && col % 76 == 0) {
            sb_add(sb, "\\n");

        } else if (enc == ENC_CRLF76 && col % 76 == 0) {
            sb_add(sb, "\\r\\n");

        } else if (enc == ENC_MIXED && col % 64 == 0) {
            sb_add(sb, (col % 128) ? "\\r\\n" : " \\t\\n");
        }
    }

    free(out);
}


/* plain base64 text, NUL-terminated */

static char *
b64(const unsigned char *data, size_t len, int pad)
{
    sb_t  sb;

    memset(&sb, 0, sizeof(sb));
    sb_add(&sb, "");
    b64_json(&sb, data, len, pad ? ENC_PLAIN : ENC_UNPADDED);

    return sb.data;
}


/*
 * The streaming decoder on json[0 .. len), fed in chunks of the sizes in
 * steps (0 ends them; the last one repeats), must give what
 * unico_payload_parse() gives: the same result and, on success, the same
 * type and bytes, in an output buffer of exactly
 * min(max_image, decoded_max(len)) bytes.  With pool set, through the pool
 * allocator (blocks freed together at the end).
 */

typedef struct pool_block_s  pool_block_t;

struct pool_block_s {
    pool_block_t  *next;
    size_t         pad;
};


static unsigned      stream_docs;
static unsigned      stream_bad;
static unsigned      stream_fallbacks;


static void *
pool_alloc(void *pool, size_t size)
{
    pool_block_t  *b, **head = pool;

    b = xmalloc(sizeof(pool_block_t) + size);
    b->next = *head;
    *head = b;

    return b + 1;
}


static int
stream_run(const char *json, size_t len, size_t max_image,
    const size_t *steps, unsigned pool)
{
    int                      good;
    size_t                   off, n, cap, k;
    pool_block_t            *head, *next;
    unsigned char           *buf, *out, *chunk;
    unico_image_t            want, got;
    unico_pool_alloc_t       pa;
    unico_payload_rc_e       rc_want, rc;
    unico_payload_stream_t  *st;

    buf = xmalloc(len ? len : 1);
    memcpy(buf, json, len);
    rc_want = unico_payload_parse(buf, len, max_image, &want);

    cap = unico_payload_stream_out_size(len, max_image);
    out = xmalloc(cap ? cap : 1);

    head = NULL;
    unico_pool_alloc_init(&pa, pool_alloc, &head);

    st = unico_payload_stream_create(out, cap, max_image, len,
                                     pool ? &pa.funcs : NULL);
    if (st == NULL) {
        die("unico_payload_stream_create");
    }

    for (off = 0, k = 0; off < len; off += n) {
        n = steps[k];

        if (steps[k + 1] != 0) {
            k++;
        }

        if (n > len - off) {
            n = len - off;
        }

        chunk = xmalloc(n);
        memcpy(chunk, json + off, n);

        if (unico_payload_stream_feed(st, chunk, n) != UNICO_PAYLOAD_OK) {
            die("unico_payload_stream_feed");
        }

        free(chunk);
    }

    rc = unico_payload_stream_finish(st, &got);

    good = (rc == rc_want);

    if (good && rc == UNICO_PAYLOAD_OK) {
        good = (got.data == out && got.len == want.len
                && got.type == want.type
                && memcmp(got.data, want.data, got.len) == 0);
    }

    if (!good) {
        diag("stream %s, parse %s, first chunk %zu: %.60s",
             unico_payload_strerror(rc), unico_payload_strerror(rc_want),
             steps[0], json);
    }

    stream_fallbacks += unico_payload_stream_fell_back(st);

    unico_payload_stream_destroy(st);

    while (head != NULL) {
        next = head->next;
        free(head);
        head = next;
    }

    free(out);
    free(buf);

    return good;
}


/* whole, byte by byte, and every split in two (short) or a few sizes */

static void
stream_check(const char *json, size_t len, size_t max_image)
{
    int     good;
    size_t  i, steps[4];

    static const size_t  sizes[][4] = {
        { (size_t) -1, 0 }, { 1, 0 }, { 7, 0 }, { 4096, 0 },
        { 17, 65536, 3, 0 }, { 1000, 1, 0 }
    };

    good = 1;

    for (i = 0; i < sizeof(sizes) / sizeof(sizes[0]); i++) {

        /* byte by byte: the short ones (the same code on the long ones) */

        if (sizes[i][0] == 1 && len > 16384) {
            continue;
        }

        good &= stream_run(json, len, max_image, sizes[i], i & 1);
    }

    for (i = 1; len <= 600 && i < len; i++) {
        steps[0] = i;
        steps[1] = len;
        steps[2] = 0;

        good &= stream_run(json, len, max_image, steps, i & 1);
    }

    stream_docs++;
    stream_bad += !good;
}


/* Unico's shapes stream without falling back, to the same bytes */

static int
stream_streams(const char *json, size_t len, const unsigned char *want,
    size_t want_len)
{
    int                      good;
    size_t                   off, n;
    unsigned char           *out;
    unico_image_t            got;
    unico_payload_stream_t  *st;

    out = xmalloc(unico_base64_decoded_max(len));

    st = unico_payload_stream_create(out, unico_base64_decoded_max(len),
                                     MAX_IMAGE, len, NULL);
    if (st == NULL) {
        die("unico_payload_stream_create");
    }

    for (off = 0; off < len; off += n) {
        n = (len - off < 4096) ? len - off : 4096;

        if (unico_payload_stream_feed(st, (const unsigned char *) json + off,
                                      n)
            != UNICO_PAYLOAD_OK)
        {
            die("unico_payload_stream_feed");
        }
    }

    good = (unico_payload_stream_finish(st, &got) == UNICO_PAYLOAD_OK
            && !unico_payload_stream_fell_back(st)
            && got.data == out && got.len == want_len
            && memcmp(out, want, want_len) == 0);

    unico_payload_stream_destroy(st);
    free(out);

    return good;
}


/*
 * Parses json[0 .. len) from an exact-size copy.  When want is not NULL,
 * the decoded image must equal want[0 .. want_len) and be inside the copy.
 */

static unico_payload_rc_e
parse(const char *json, size_t len, size_t max_image, unico_image_t *out,
    const unsigned char *want, size_t want_len, int *same)
{
    unsigned char       *buf;
    unico_payload_rc_e   rc;

    buf = xmalloc(len);
    memcpy(buf, json, len);

    rc = unico_payload_parse(buf, len, max_image, out);

    stream_check(json, len, max_image);

    if (same != NULL) {
        *same = (rc == UNICO_PAYLOAD_OK && out->data == buf
                 && out->len == want_len
                 && memcmp(out->data, want, want_len) == 0);
    }

    out->data = NULL;
    free(buf);

    return rc;
}


static int
expect_rc(const char *desc, const char *json, size_t len, size_t max_image,
    unico_payload_rc_e want)
{
    unico_image_t       out;
    unico_payload_rc_e  rc;

    rc = parse(json, len, max_image, &out, NULL, 0, NULL);

    if (!ok(rc == want, "%s: %s", desc, unico_payload_strerror(want))) {
        diag("got %s", unico_payload_strerror(rc));
        return 0;
    }

    return 1;
}


#define expect(desc, json, want)                                              \
    expect_rc(desc, json, strlen(json), MAX_IMAGE, want)


/*
 * unico_payload_parse() and unico_payload_parse_reference(), on exact-size
 * copies, must give the same result and, on success, the same image.
 */

static int
same_as_reference(const char *json, size_t len, size_t max_image,
    unico_payload_rc_e *result)
{
    int                  same;
    unsigned char       *a, *b;
    unico_image_t        out_a, out_b;
    unico_payload_rc_e   rc_a, rc_b;

    a = xmalloc(len);
    b = xmalloc(len);
    memcpy(a, json, len);
    memcpy(b, json, len);

    rc_a = unico_payload_parse(a, len, max_image, &out_a);
    rc_b = unico_payload_parse_reference(b, len, max_image, &out_b);

    stream_check(json, len, max_image);

    same = (rc_a == rc_b);

    if (same && rc_a == UNICO_PAYLOAD_OK) {
        same = (out_a.data == a && out_b.data == b && out_a.len == out_b.len
                && out_a.type == out_b.type
                && memcmp(a, b, out_a.len) == 0);
    }

    if (!same) {
        diag("fast %s, reference %s", unico_payload_strerror(rc_a),
             unico_payload_strerror(rc_b));
    }

    if (result != NULL) {
        *result = rc_a;
    }

    free(a);
    free(b);

    return same;
}


static int
expect_same_rc(const char *desc, const char *json, size_t len,
    size_t max_image, unico_payload_rc_e want)
{
    int                 same;
    unico_payload_rc_e  rc;

    same = same_as_reference(json, len, max_image, &rc);

    if (!ok(same && rc == want, "%s: %s, as the reference", desc,
            unico_payload_strerror(want)))
    {
        diag("got %s", unico_payload_strerror(rc));
        return 0;
    }

    return 1;
}


#define expect_same(desc, json, want)                                         \
    expect_same_rc(desc, json, strlen(json), MAX_IMAGE, want)


/*
 * Documents that take the streaming decoder's rarer turns: escapes cut
 * anywhere, surrogates, UTF-8 in the string, a key with escapes, fields
 * twice, nesting before the string, a string that never ends.  Each goes
 * through stream_check() (every split), whose verdict is the last test.
 */

static void
test_stream_edges(void)
{
    size_t  i;

    static const char  *docs[] = {
        "{\"fileContents\":\"/9j/4A==\",\"contentType\":\"image/jpeg\"}",
        "{\"fileContents\":\"\\/9j\\/4A==\",\"contentType\":\"image\\/jpeg\"}",
        "{\"fileContents\":\"\\u002f9j\\u002F4A\\u003d=\","
            "\"contentType\":\"image/jpeg\"}",
        "{\"fileContents\":\"/9j/\\r\\n4A\\t=\\n= \","
            "\"contentType\":\"image/jpeg\"}",
        "{\"fileContents\":\"/9j/\\uD83D\\uDE00\",\"contentType\":\"x\"}",
        "{\"fileContents\":\"/9j/\\uD83D\",\"contentType\":\"image/jpeg\"}",
        "{\"fileContents\":\"/9j/\\uD83Dx\",\"contentType\":\"image/jpeg\"}",
        "{\"fileContents\":\"/9j/\\uD83D\\n\",\"contentType\":\"image/jpeg\"}",
        "{\"fileContents\":\"/9j/\\uD83D\\\"\",\"contentType\":\"image/jpeg\"}",
        "{\"fileContents\":\"/9j/\\uD83D\\u12\",\"contentType\":"
            "\"image/jpeg\"}",
        "{\"fileContents\":\"/9j/\\u12\",\"contentType\":\"image/jpeg\"}",
        "{\"fileContents\":\"/9j/\\u12\\\\\",\"contentType\":\"image/jpeg\"}",
        "{\"fileContents\":\"/9j/\\x\",\"contentType\":\"image/jpeg\"}",
        "{\"fileContents\":\"/9j/\xc3\xa9\",\"contentType\":\"image/jpeg\"}",
        "{\"fileContents\":\"/9j/\xc3\",\"contentType\":\"image/jpeg\"}",
        "{\"fileContents\":\"/9j/\xc3\\n\",\"contentType\":\"image/jpeg\"}",
        "{\"fileContents\":\"/9j/\x01\",\"contentType\":\"image/jpeg\"}",
        "{\"fileContents\":\"/9j/4A=\",\"contentType\":\"image/jpeg\"}",
        "{\"fileContents\":\"/9j/4A==x\",\"contentType\":\"image/jpeg\"}",
        "{\"fileContents\":\"/9j/4\",\"contentType\":\"image/jpeg\"}",
        "{\"fileContents\":\"\",\"contentType\":\"image/jpeg\"}",
        "{\"fileContents\":\"    \",\"contentType\":\"image/jpeg\"}",
        "{\"fileContent\\u0073\":\"/9j/4A==\",\"fileContents\":\"/9j/4A==\","
            "\"contentType\":\"image/jpeg\"}",
        "{\"fileContents\":\"/9j/4A==\",\"fileContent\\u0073\":\"/9j/\","
            "\"contentType\":\"image/jpeg\"}",
        "{\"fileContent\\u0073\":\"/9j/4A==\",\"contentType\":\"image/jpeg\"}",
        "{\"fileContents\":\"/9j/4A==\",\"fileContents\":\"/9j/4A==\","
            "\"contentType\":\"image/jpeg\"}",
        "{\"contentType\":\"image/jpeg\",\"contentType\":\"image/jpeg\","
            "\"fileContents\":\"/9j/4A==\"}",
        "{\"a\":{\"fileContents\":\"x\"},\"b\":[\"fileContents\"],"
            "\"fileContents\":\"/9j/4A==\",\"contentType\":\"image/jpeg\"}",
        "{\"a\":tru\"fileContents\":\"/9j/4A==\",\"contentType\":"
            "\"image/jpeg\"}",
        "{\"a\" \"fileContents\":\"/9j/4A==\",\"contentType\":\"image/jpeg\"}",
        "{\"fileContents\":12,\"contentType\":\"image/jpeg\"}",
        "{\"fileContents\" \"/9j/4A==\",\"contentType\":\"image/jpeg\"}",
        "[{\"fileContents\":\"/9j/4A==\",\"contentType\":\"image/jpeg\"}]",
        "{\"fileContents\":\"/9j/4A==",
        "{\"fileContents\":\"/9j/4A==\"",
        "{\"fileContents\":\"/9j/4A==\",\"contentType\":\"image/jpeg\"",
        "{\"fileContents\":\"/9j/4A==\",\"contentType\":\"image/jpeg\"} x",
        "{\"fileContents\":\"iVBORw0KGgo=\",\"contentType\":\"image/jpeg\"}",
        "{\"fileContents\":\"iVBORw0KGgo=\",\"contentType\":\"IMAGE/PNG\"}",
        " \t\r\n{ \"fileContents\" : \"/9j/4A==\" , \"contentType\" : "
            "\"image/jpeg\" } \n"
    };

    for (i = 0; i < sizeof(docs) / sizeof(docs[0]); i++) {
        stream_check(docs[i], strlen(docs[i]), MAX_IMAGE);
        stream_check(docs[i], strlen(docs[i]), 1);
        stream_check(docs[i], strlen(docs[i]), 3);
    }
}


static void
test_fixtures(fixture_t *fx, size_t nfx)
{
    static const struct {
        enc_e        enc;
        const char  *desc;
    } encs[] = {
        { ENC_PLAIN,    "plain" },
        { ENC_UNPADDED, "unpadded" },
        { ENC_SLASH,    "escaped slashes \\/" },
        { ENC_U002F,    "\\u002F escapes" },
        { ENC_LF76,     "\\n every 76" },
        { ENC_CRLF76,   "\\r\\n every 76" },
        { ENC_MIXED,    "mixed escapes and blanks" }
    };

    int                  same;
    sb_t                 sb, b;
    size_t               i, e;
    const char          *mime;
    unico_image_t        out;
    unico_payload_rc_e   rc;

    memset(&sb, 0, sizeof(sb));
    memset(&b, 0, sizeof(b));

    for (i = 0; i < nfx; i++) {
        mime = unico_image_mime(fx[i].type);

        for (e = 0; e < sizeof(encs) / sizeof(encs[0]); e++) {
            sb_add(&b, "");
            b64_json(&b, fx[i].data, fx[i].len, encs[e].enc);

            sb_add(&sb, "{\"fileContents\": \"");
            sb_addn(&sb, b.data, b.len);
            sb_add(&sb, "\", \"contentType\": \"");
            sb_add(&sb, mime);
            sb_add(&sb, "\"}");

            rc = parse(sb.data, sb.len, MAX_IMAGE, &out, fx[i].data,
                       fx[i].len, &same);

            if (!ok(same && out.type == fx[i].type,
                    "%s, %s: %s, %zu bytes identical",
                    fx[i].name, encs[e].desc, mime, fx[i].len))
            {
                diag("rc %s, type %d, len %zu", unico_payload_strerror(rc),
                     (int) out.type, out.len);
            }

            ok(stream_streams(sb.data, sb.len, fx[i].data, fx[i].len),
               "%s, %s: streamed in 4 KB chunks, no fallback, identical",
               fx[i].name, encs[e].desc);

            sb.len = 0;
            b.len = 0;
        }

        /* contentType first, pretty-printed, other fields around */

        sb_add(&b, "");
        b64_json(&b, fx[i].data, fx[i].len, ENC_PLAIN);

        sb_add(&sb, "{\n  \"contentType\" : \"");
        sb_add(&sb, mime);
        sb_add(&sb, "\",\r\n\t\"fileContents\" :\"");
        sb_addn(&sb, b.data, b.len);
        sb_add(&sb, "\"\n}\n");

        rc = parse(sb.data, sb.len, MAX_IMAGE, &out, fx[i].data, fx[i].len,
                   &same);

        ok(same && out.type == fx[i].type, "%s: fields reordered",
           fx[i].name);

        sb.len = 0;

        sb_add(&sb, "{\"id\": \"7bd2c3e4-52f1-4b7a-9c51-4a4f7c0e2b11\","
               " \"meta\": {\"fileContents\": 12, \"contentType\":"
               " \"text/html\", \"deep\": {\"fileContents\": \"!!!\"}},"
               " \"list\": [1, 2.5e10, -3, null, true, false,"
               " {\"fileContents\": \"x\", \"contentType\": []}, [[]],"
               " \"s\"], \"big\": 123456789012345678901234567890,"
               " \"t\": true, \"f\": false, \"z\": null, \"e\": {},"
               " \"a\": [], \"fileContents\": \"");
        sb_addn(&sb, b.data, b.len);
        sb_add(&sb, "\", \"after\": {\"fileContents\": null,"
               " \"contentType\": {\"x\": [\"image/gif\"]}},"
               " \"contentType\": \"");
        sb_add(&sb, mime);
        sb_add(&sb, "\", \"tail\": [{\"a\": [{\"b\": {}}]}],"
               " \"\\u00e9\\ud83d\\ude00\": \"\xc3\xa9\"}");

        rc = parse(sb.data, sb.len, MAX_IMAGE, &out, fx[i].data, fx[i].len,
                   &same);

        if (!ok(same && out.type == fx[i].type,
                "%s: extra and nested fields ignored", fx[i].name))
        {
            diag("rc %s", unico_payload_strerror(rc));
        }

        sb.len = 0;
        b.len = 0;
    }

    sb_free(&sb);
    sb_free(&b);
}


static void
test_limits(fixture_t *fx, size_t nfx)
{
    int                  same;
    sb_t                 sb, b;
    size_t               i, len;
    unsigned char       *buf;
    unico_image_t        out;
    unico_payload_rc_e   rc;

    memset(&sb, 0, sizeof(sb));
    memset(&b, 0, sizeof(b));

    /* base64 with \r\n every 76 characters: blanks do not count */

    for (i = 0; i < nfx; i++) {
        sb_add(&b, "");
        b64_json(&b, fx[i].data, fx[i].len, ENC_CRLF76);

        sb_add(&sb, "{\"fileContents\":\"");
        sb_addn(&sb, b.data, b.len);
        sb_add(&sb, "\",\"contentType\":\"");
        sb_add(&sb, unico_image_mime(fx[i].type));
        sb_add(&sb, "\"}");

        rc = parse(sb.data, sb.len, fx[i].len, &out, fx[i].data, fx[i].len,
                   &same);
        ok(same, "%s: image of exactly max_image bytes accepted",
           fx[i].name);

        rc = parse(sb.data, sb.len, fx[i].len - 1, &out, NULL, 0, NULL);
        ok(rc == UNICO_PAYLOAD_TOO_LARGE,
           "%s: max_image one byte less: image_too_large", fx[i].name);

        sb.len = 0;
        b.len = 0;
    }

    /* 100 times the size of max_image, refused with buf intact */

    sb_add(&sb, "{\"contentType\":\"image/jpeg\",\"fileContents\":\"/9j/");

    for (i = 0; i < 100 * 1024 / 64; i++) {
        sb_add(&sb, "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"
               "AAAAAAAA\\n");
    }

    sb_add(&sb, "\"}");

    len = sb.len;
    buf = xmalloc(len);
    memcpy(buf, sb.data, len);

    rc = unico_payload_parse(buf, len, 1024, &out);

    ok(rc == UNICO_PAYLOAD_TOO_LARGE && memcmp(buf, sb.data, len) == 0,
       "huge claimed string refused without decoding: %s",
       unico_payload_strerror(rc));

    free(buf);

    /* the same, valid, under a big enough limit */

    rc = parse(sb.data, sb.len, 100 * 1024, &out, NULL, 0, NULL);
    ok(rc == UNICO_PAYLOAD_OK && out.len == 76803,
       "the same string under a big enough limit: %s, %zu bytes",
       unico_payload_strerror(rc), out.len);

    sb.len = 0;
    sb_add(&sb, "{\"fileContents\":\"/9j/\",\"contentType\":\"image/jpeg\"}");

    expect_rc("max_image 0, 3 bytes", sb.data, sb.len, 0,
              UNICO_PAYLOAD_TOO_LARGE);
    expect_rc("max_image 3, 3 bytes", sb.data, sb.len, 3, UNICO_PAYLOAD_OK);

    sb_free(&sb);
    sb_free(&b);
}


static void
test_errors(void)
{
    static const char  *cuts = "{\"fileContents\": \"/9j/4A==\", "
                                "\"contentType\": \"image/jpeg\"}";
    static const size_t  at[] = { 1, 2, 8, 15, 16, 17, 18, 22, 26, 27, 28,
                                  30, 44, 45, 50, 55, 56 };

    size_t  i;
    char    desc[64];

    expect("valid 4-byte JPEG", cuts, UNICO_PAYLOAD_OK);
    expect("valid 8-byte PNG", "{\"fileContents\":\"iVBORw0KGgo=\","
           "\"contentType\":\"image/png\"}", UNICO_PAYLOAD_OK);

    /* BAD_JSON */

    expect_rc("empty input", "", 0, MAX_IMAGE, UNICO_PAYLOAD_BAD_JSON);
    expect("blanks only", " \r\n\t ", UNICO_PAYLOAD_BAD_JSON);
    expect("not JSON", "fileContents=/9j/4A==", UNICO_PAYLOAD_BAD_JSON);
    expect("bad JSON", "{\"fileContents\": ]", UNICO_PAYLOAD_BAD_JSON);
    expect("trailing comma", "{\"fileContents\": \"/9j/4A==\", "
           "\"contentType\": \"image/jpeg\",}", UNICO_PAYLOAD_BAD_JSON);
    expect("single quotes", "{'fileContents': '/9j/4A==', "
           "'contentType': 'image/jpeg'}", UNICO_PAYLOAD_BAD_JSON);
    expect("comment", "{/* */\"fileContents\": \"/9j/4A==\", "
           "\"contentType\": \"image/jpeg\"}", UNICO_PAYLOAD_BAD_JSON);
    expect("raw newline in a string", "{\"fileContents\": \"/9j/\n4A==\", "
           "\"contentType\": \"image/jpeg\"}", UNICO_PAYLOAD_BAD_JSON);
    expect("invalid UTF-8 in another field", "{\"x\": \"\xff\", "
           "\"fileContents\": \"/9j/4A==\", \"contentType\": \"image/jpeg\"}",
           UNICO_PAYLOAD_BAD_JSON);
    expect("trailing garbage", "{\"fileContents\": \"/9j/4A==\", "
           "\"contentType\": \"image/jpeg\"} x", UNICO_PAYLOAD_BAD_JSON);
    expect("two documents", "{\"fileContents\": \"/9j/4A==\", "
           "\"contentType\": \"image/jpeg\"}{}", UNICO_PAYLOAD_BAD_JSON);

    for (i = 0; i < sizeof(at) / sizeof(at[0]); i++) {
        snprintf(desc, sizeof(desc), "truncated after %zu bytes", at[i]);
        expect_rc(desc, cuts, at[i], MAX_IMAGE, UNICO_PAYLOAD_BAD_JSON);
    }

    /* NOT_OBJECT */

    expect("top-level array", "[{\"fileContents\": \"/9j/4A==\", "
           "\"contentType\": \"image/jpeg\"}]", UNICO_PAYLOAD_NOT_OBJECT);
    expect("top-level string", "\"/9j/4A==\"", UNICO_PAYLOAD_NOT_OBJECT);
    expect("top-level number", "42", UNICO_PAYLOAD_NOT_OBJECT);
    expect("top-level null", "null", UNICO_PAYLOAD_NOT_OBJECT);
    expect("top-level true", " true ", UNICO_PAYLOAD_NOT_OBJECT);

    /* MISSING_FIELD */

    expect("empty object", "{}", UNICO_PAYLOAD_MISSING_FIELD);
    expect("no fileContents", "{\"contentType\": \"image/jpeg\", "
           "\"x\": {\"fileContents\": \"/9j/4A==\"}}",
           UNICO_PAYLOAD_MISSING_FIELD);
    expect("no contentType", "{\"fileContents\": \"/9j/4A==\", "
           "\"x\": {\"contentType\": \"image/jpeg\"}}",
           UNICO_PAYLOAD_MISSING_FIELD);
    expect("keys differ in case", "{\"filecontents\": \"/9j/4A==\", "
           "\"contentType\": \"image/jpeg\"}", UNICO_PAYLOAD_MISSING_FIELD);

    /* WRONG_TYPE */

    expect("fileContents number", "{\"fileContents\": 12, "
           "\"contentType\": \"image/jpeg\"}", UNICO_PAYLOAD_WRONG_TYPE);
    expect("fileContents null", "{\"fileContents\": null, "
           "\"contentType\": \"image/jpeg\"}", UNICO_PAYLOAD_WRONG_TYPE);
    expect("fileContents true", "{\"fileContents\": true, "
           "\"contentType\": \"image/jpeg\"}", UNICO_PAYLOAD_WRONG_TYPE);
    expect("fileContents array", "{\"fileContents\": [\"/9j/4A==\"], "
           "\"contentType\": \"image/jpeg\"}", UNICO_PAYLOAD_WRONG_TYPE);
    expect("fileContents object", "{\"contentType\": \"image/jpeg\", "
           "\"fileContents\": {\"fileContents\": \"/9j/4A==\"}}",
           UNICO_PAYLOAD_WRONG_TYPE);
    expect("contentType number", "{\"fileContents\": \"/9j/4A==\", "
           "\"contentType\": 1}", UNICO_PAYLOAD_WRONG_TYPE);
    expect("contentType null", "{\"contentType\": null, "
           "\"fileContents\": \"/9j/4A==\"}", UNICO_PAYLOAD_WRONG_TYPE);
    expect("contentType false", "{\"contentType\": false, "
           "\"fileContents\": \"/9j/4A==\"}", UNICO_PAYLOAD_WRONG_TYPE);

    /* DUPLICATE_FIELD */

    expect("fileContents twice", "{\"fileContents\": \"/9j/4A==\", "
           "\"contentType\": \"image/jpeg\", \"fileContents\": \"/9j/4A==\"}",
           UNICO_PAYLOAD_DUPLICATE_FIELD);
    expect("contentType twice", "{\"contentType\": \"image/jpeg\", "
           "\"fileContents\": \"/9j/4A==\", \"contentType\": \"image/jpeg\"}",
           UNICO_PAYLOAD_DUPLICATE_FIELD);
    expect("fileContents twice, once escaped", "{\"fileContents\": "
           "\"/9j/4A==\", \"fileContent\\u0073\": \"/9j/4A==\", "
           "\"contentType\": \"image/jpeg\"}", UNICO_PAYLOAD_DUPLICATE_FIELD);

    /* BAD_CONTENT_TYPE */

    expect("text/html", "{\"fileContents\": \"/9j/4A==\", "
           "\"contentType\": \"text/html\"}", UNICO_PAYLOAD_BAD_CONTENT_TYPE);
    expect("image/svg+xml", "{\"fileContents\": \"/9j/4A==\", "
           "\"contentType\": \"image/svg+xml\"}",
           UNICO_PAYLOAD_BAD_CONTENT_TYPE);
    expect("image/gif", "{\"fileContents\": \"R0lGODlh\", "
           "\"contentType\": \"image/gif\"}", UNICO_PAYLOAD_BAD_CONTENT_TYPE);
    expect("image/jpeg; charset=x", "{\"fileContents\": \"/9j/4A==\", "
           "\"contentType\": \"image/jpeg; charset=x\"}",
           UNICO_PAYLOAD_BAD_CONTENT_TYPE);
    expect("image/jpg", "{\"fileContents\": \"/9j/4A==\", "
           "\"contentType\": \"image/jpg\"}", UNICO_PAYLOAD_BAD_CONTENT_TYPE);
    expect("leading blank", "{\"fileContents\": \"/9j/4A==\", "
           "\"contentType\": \" image/jpeg\"}",
           UNICO_PAYLOAD_BAD_CONTENT_TYPE);
    expect("trailing blank", "{\"fileContents\": \"/9j/4A==\", "
           "\"contentType\": \"image/jpeg \"}",
           UNICO_PAYLOAD_BAD_CONTENT_TYPE);
    expect("trailing NUL", "{\"fileContents\": \"/9j/4A==\", "
           "\"contentType\": \"image/jpeg\\u0000\"}",
           UNICO_PAYLOAD_BAD_CONTENT_TYPE);
    expect("empty contentType", "{\"fileContents\": \"/9j/4A==\", "
           "\"contentType\": \"\"}", UNICO_PAYLOAD_BAD_CONTENT_TYPE);
    expect("IMAGE/JPEG accepted", "{\"fileContents\": \"/9j/4A==\", "
           "\"contentType\": \"IMAGE/JPEG\"}", UNICO_PAYLOAD_OK);
    expect("Image/Png accepted", "{\"fileContents\": \"iVBORw0KGgo=\", "
           "\"contentType\": \"Image/Png\"}", UNICO_PAYLOAD_OK);
    expect("image\\/jpeg accepted", "{\"fileContents\": \"/9j/4A==\", "
           "\"contentType\": \"image\\/jpeg\"}", UNICO_PAYLOAD_OK);

    /* IMAGE_MISMATCH */

    expect("PNG bytes labelled image/jpeg", "{\"fileContents\": "
           "\"iVBORw0KGgo=\", \"contentType\": \"image/jpeg\"}",
           UNICO_PAYLOAD_IMAGE_MISMATCH);
    expect("JPEG bytes labelled image/png", "{\"fileContents\": "
           "\"/9j/4A==\", \"contentType\": \"image/png\"}",
           UNICO_PAYLOAD_IMAGE_MISMATCH);
    expect("GIF bytes labelled image/jpeg", "{\"fileContents\": "
           "\"R0lGODlh\", \"contentType\": \"image/jpeg\"}",
           UNICO_PAYLOAD_IMAGE_MISMATCH);
    expect("2 bytes of JPEG signature", "{\"fileContents\": \"/9g=\", "
           "\"contentType\": \"image/jpeg\"}", UNICO_PAYLOAD_IMAGE_MISMATCH);
    expect("7 bytes of PNG signature", "{\"fileContents\": \"iVBORw0KGg==\","
           " \"contentType\": \"image/png\"}", UNICO_PAYLOAD_IMAGE_MISMATCH);

    /* BAD_BASE64 */

    expect("bad base64 character", "{\"fileContents\": \"/9j/*A==\", "
           "\"contentType\": \"image/jpeg\"}", UNICO_PAYLOAD_BAD_BASE64);
    expect("base64url characters", "{\"fileContents\": \"_9j_4A==\", "
           "\"contentType\": \"image/jpeg\"}", UNICO_PAYLOAD_BAD_BASE64);
    expect("'=' in the middle", "{\"fileContents\": \"/9j/4A==/9j/4A==\", "
           "\"contentType\": \"image/jpeg\"}", UNICO_PAYLOAD_BAD_BASE64);
    expect("'=' starting a quantum", "{\"fileContents\": \"/9j/=\", "
           "\"contentType\": \"image/jpeg\"}", UNICO_PAYLOAD_BAD_BASE64);
    expect("single dangling sextet", "{\"fileContents\": \"/9j/4\", "
           "\"contentType\": \"image/jpeg\"}", UNICO_PAYLOAD_BAD_BASE64);
    expect("incomplete padding", "{\"fileContents\": \"/9j/4A=\", "
           "\"contentType\": \"image/jpeg\"}", UNICO_PAYLOAD_BAD_BASE64);
    expect("escaped NUL", "{\"fileContents\": \"/9j/\\u00004A==\", "
           "\"contentType\": \"image/jpeg\"}", UNICO_PAYLOAD_BAD_BASE64);
    expect("non-ASCII", "{\"fileContents\": \"/9j/\xc3\xa9" "4A==\", "
           "\"contentType\": \"image/jpeg\"}", UNICO_PAYLOAD_BAD_BASE64);
    expect("blanks between quanta accepted", "{\"fileContents\": "
           "\" /9j/\\r\\n4A== \\t\", \"contentType\": \"image/jpeg\"}",
           UNICO_PAYLOAD_OK);

    /* EMPTY_IMAGE */

    expect("empty fileContents", "{\"fileContents\": \"\", "
           "\"contentType\": \"image/jpeg\"}", UNICO_PAYLOAD_EMPTY_IMAGE);
    expect("blank fileContents", "{\"fileContents\": \"\\r\\n\", "
           "\"contentType\": \"image/jpeg\"}", UNICO_PAYLOAD_EMPTY_IMAGE);

    /* the first problem in document order wins */

    expect("bad content type before bad base64", "{\"contentType\": "
           "\"text/html\", \"fileContents\": \"*\"}",
           UNICO_PAYLOAD_BAD_CONTENT_TYPE);
    expect("bad base64 before trailing garbage", "{\"fileContents\": "
           "\"*\", \"contentType\": \"image/jpeg\"} x",
           UNICO_PAYLOAD_BAD_BASE64);
}


/*
 * The fast path, which hands yajl the document without the fileContents
 * string and decodes that string itself, against the reference, which
 * has yajl lex the whole document.
 */

static void
test_fast_path(fixture_t *fx, size_t nfx)
{
    static const char  *doc = "{\"fileContents\": \"/9j/4A==\", "
                              "\"contentType\": \"image/jpeg\"}";

    static const char   bytes[] = {
        '\0', '\t', '\n', '\r', '\v', '\f', ' ', '"', '\\', '/', '=', '*',
        'u', 'n', '{', '}', '[', ']', ',', ':', '0', '-', 'A',
        '\x7f', '\x80', '\xbf', '\xc3', '\xe2', '\xf0', '\xff'
    };

    static const enc_e  encs[] = {
        ENC_PLAIN, ENC_SLASH, ENC_U002F, ENC_LF76, ENC_MIXED
    };

    int      good;
    char    *m;
    sb_t     sb, b;
    size_t   i, e, k, len, n;

    memset(&sb, 0, sizeof(sb));
    memset(&b, 0, sizeof(b));

    /* the fixtures, plain and escaped, under limits around their sizes */

    for (i = 0; i < nfx; i++) {
        good = 1;

        for (e = 0; e < sizeof(encs) / sizeof(encs[0]); e++) {
            sb.len = 0;
            b.len = 0;
            sb_add(&b, "");
            b64_json(&b, fx[i].data, fx[i].len, encs[e]);

            sb_add(&sb, "{\"fileContents\":\"");
            sb_addn(&sb, b.data, b.len);
            sb_add(&sb, "\",\"contentType\":\"");
            sb_add(&sb, unico_image_mime(fx[i].type));
            sb_add(&sb, "\"}");

            good = good
                   && same_as_reference(sb.data, sb.len, MAX_IMAGE, NULL)
                   && same_as_reference(sb.data, sb.len, fx[i].len, NULL)
                   && same_as_reference(sb.data, sb.len, fx[i].len - 1,
                                        NULL)
                   && same_as_reference(sb.data, sb.len, fx[i].len / 2,
                                        NULL);
        }

        ok(good, "%s: plain and escaped, limits around its size, "
           "as the reference", fx[i].name);
    }

    /* escapes in the string */

    expect_same("\\/ escapes", "{\"fileContents\": \"\\/9j\\/4A==\", "
                "\"contentType\": \"image/jpeg\"}", UNICO_PAYLOAD_OK);
    expect_same("\\u002f and \\u002F", "{\"fileContents\": "
                "\"\\u002f9j\\u002F4A==\", \"contentType\": \"image/jpeg\"}",
                UNICO_PAYLOAD_OK);
    expect_same("escaped blanks", "{\"fileContents\": \"\\t/9j/\\r\\n4A"
                "\\u0020==\\n\", \"contentType\": \"image/jpeg\"}",
                UNICO_PAYLOAD_OK);
    expect_same("escaped quote", "{\"fileContents\": \"/9j/\\\"4A==\", "
                "\"contentType\": \"image/jpeg\"}", UNICO_PAYLOAD_BAD_BASE64);
    expect_same("escaped quote last", "{\"fileContents\": \"/9j/4A==\\\"\", "
                "\"contentType\": \"image/jpeg\"}", UNICO_PAYLOAD_BAD_BASE64);
    expect_same("escaped backslash", "{\"fileContents\": \"/9j/\\\\4A==\", "
                "\"contentType\": \"image/jpeg\"}", UNICO_PAYLOAD_BAD_BASE64);
    expect_same("\\b", "{\"fileContents\": \"/9j/\\b4A==\", "
                "\"contentType\": \"image/jpeg\"}", UNICO_PAYLOAD_BAD_BASE64);
    expect_same("\\f", "{\"fileContents\": \"/9j/\\f4A==\", "
                "\"contentType\": \"image/jpeg\"}", UNICO_PAYLOAD_BAD_BASE64);
    expect_same("\\u00e9", "{\"fileContents\": \"/9j/\\u00e94A==\", "
                "\"contentType\": \"image/jpeg\"}", UNICO_PAYLOAD_BAD_BASE64);
    expect_same("\\u20AC", "{\"fileContents\": \"/9j/\\u20AC4A==\", "
                "\"contentType\": \"image/jpeg\"}", UNICO_PAYLOAD_BAD_BASE64);
    expect_same("surrogate pair", "{\"fileContents\": \"/9j/\\ud83d\\ude00"
                "4A==\", \"contentType\": \"image/jpeg\"}",
                UNICO_PAYLOAD_BAD_BASE64);
    expect_same("lone high surrogate", "{\"fileContents\": \"/9j/\\ud83d"
                "4A==\", \"contentType\": \"image/jpeg\"}",
                UNICO_PAYLOAD_BAD_BASE64);
    expect_same("high surrogate last", "{\"fileContents\": \"/9j/4A==\\ud83d"
                "\", \"contentType\": \"image/jpeg\"}",
                UNICO_PAYLOAD_BAD_BASE64);
    expect_same("high surrogate, bad escape after", "{\"fileContents\": "
                "\"/9j/\\ud83d\\u12\", \"contentType\": \"image/jpeg\"}",
                UNICO_PAYLOAD_BAD_JSON);
    expect_same("\\x", "{\"fileContents\": \"/9j/\\x4A==\", "
                "\"contentType\": \"image/jpeg\"}", UNICO_PAYLOAD_BAD_JSON);
    expect_same("\\U0041", "{\"fileContents\": \"/9j/\\U00414A==\", "
                "\"contentType\": \"image/jpeg\"}", UNICO_PAYLOAD_BAD_JSON);
    expect_same("\\u short", "{\"fileContents\": \"/9j/4A==\\u00\", "
                "\"contentType\": \"image/jpeg\"}", UNICO_PAYLOAD_BAD_JSON);
    expect_same("\\u not hex", "{\"fileContents\": \"/9j/\\u00g04A==\", "
                "\"contentType\": \"image/jpeg\"}", UNICO_PAYLOAD_BAD_JSON);
    expect_same("bad escape after bad base64", "{\"fileContents\": "
                "\"*\\/9j/\\q\", \"contentType\": \"image/jpeg\"}",
                UNICO_PAYLOAD_BAD_JSON);

    /* raw control characters, raw non-ASCII */

    expect_same("raw TAB", "{\"fileContents\": \"/9j/\t4A==\", "
                "\"contentType\": \"image/jpeg\"}", UNICO_PAYLOAD_BAD_JSON);
    expect_same("raw CR LF", "{\"fileContents\": \"/9j/\r\n4A==\", "
                "\"contentType\": \"image/jpeg\"}", UNICO_PAYLOAD_BAD_JSON);
    expect_same("raw LF last", "{\"fileContents\": \"/9j/4A==\n\", "
                "\"contentType\": \"image/jpeg\"}", UNICO_PAYLOAD_BAD_JSON);
    expect_same("raw LF first", "{\"fileContents\": \"\n/9j/4A==\", "
                "\"contentType\": \"image/jpeg\"}", UNICO_PAYLOAD_BAD_JSON);
    expect_same("raw \\x01", "{\"fileContents\": \"/9j/\x01" "4A==\", "
                "\"contentType\": \"image/jpeg\"}", UNICO_PAYLOAD_BAD_JSON);
    expect_same("raw LF after bad base64", "{\"fileContents\": "
                "\"*/9j/4A==\n\", \"contentType\": \"image/jpeg\"}",
                UNICO_PAYLOAD_BAD_JSON);
    expect_same("raw LF after misplaced '='", "{\"fileContents\": "
                "\"/9j/=4A==\n\", \"contentType\": \"image/jpeg\"}",
                UNICO_PAYLOAD_BAD_JSON);
    expect_same("raw LF among escapes", "{\"fileContents\": "
                "\"\\/9j\\/\n4A==\", \"contentType\": \"image/jpeg\"}",
                UNICO_PAYLOAD_BAD_JSON);
    expect_same("raw SP accepted", "{\"fileContents\": \" /9j/ 4A== \", "
                "\"contentType\": \"image/jpeg\"}", UNICO_PAYLOAD_OK);
    expect_same("raw DEL", "{\"fileContents\": \"/9j/\x7f" "4A==\", "
                "\"contentType\": \"image/jpeg\"}", UNICO_PAYLOAD_BAD_BASE64);
    expect_same("raw UTF-8", "{\"fileContents\": \"/9j/\xc3\xa9" "4A==\", "
                "\"contentType\": \"image/jpeg\"}", UNICO_PAYLOAD_BAD_BASE64);
    expect_same("raw 4-byte UTF-8", "{\"fileContents\": \"/9j/\xf0\x9f\x98"
                "\x80" "4A==\", \"contentType\": \"image/jpeg\"}",
                UNICO_PAYLOAD_BAD_BASE64);
    expect_same("raw bad UTF-8", "{\"fileContents\": \"/9j/\xc3" "4A==\", "
                "\"contentType\": \"image/jpeg\"}", UNICO_PAYLOAD_BAD_JSON);
    expect_same("raw lone continuation byte", "{\"fileContents\": "
                "\"/9j/\x80" "4A==\", \"contentType\": \"image/jpeg\"}",
                UNICO_PAYLOAD_BAD_JSON);
    expect_same("raw UTF-8 cut by the quote", "{\"fileContents\": "
                "\"/9j/4A==\xe2\x82\", \"contentType\": \"image/jpeg\"}",
                UNICO_PAYLOAD_BAD_JSON);
    expect_same("raw bad UTF-8 after bad base64", "{\"fileContents\": "
                "\"*/9j/\xff\", \"contentType\": \"image/jpeg\"}",
                UNICO_PAYLOAD_BAD_JSON);

    /* the key, and where it is */

    expect_same("key escaped", "{\"fileContent\\u0073\": \"/9j/4A==\", "
                "\"contentType\": \"image/jpeg\"}", UNICO_PAYLOAD_OK);
    expect_same("key escaped, then plain", "{\"fileContent\\u0073\": "
                "\"/9j/4A==\", \"fileContents\": \"/9j/4A==\", "
                "\"contentType\": \"image/jpeg\"}",
                UNICO_PAYLOAD_DUPLICATE_FIELD);
    expect_same("key plain, then escaped", "{\"fileContents\": \"/9j/4A==\","
                " \"contentType\": \"image/jpeg\", \"fileContent\\u0073\": "
                "\"/9j/4A==\"}", UNICO_PAYLOAD_DUPLICATE_FIELD);
    expect_same("fileContents twice", "{\"fileContents\": \"/9j/4A==\", "
                "\"fileContents\": \"/9j/4A==\", \"contentType\": "
                "\"image/jpeg\"}", UNICO_PAYLOAD_DUPLICATE_FIELD);
    expect_same("fileContents twice, the second bad", "{\"fileContents\": "
                "\"/9j/4A==\", \"contentType\": \"image/jpeg\", "
                "\"fileContents\": 1}", UNICO_PAYLOAD_DUPLICATE_FIELD);
    expect_same("nested fileContents first", "{\"meta\": {\"fileContents\": "
                "\"!!!\", \"x\": [\"fileContents\"]}, \"fileContents\": "
                "\"/9j/4A==\", \"contentType\": \"image/jpeg\"}",
                UNICO_PAYLOAD_OK);
    expect_same("fileContents in an array first", "{\"list\": "
                "[{\"fileContents\": \"!!!\"}, \"fileContents\", 1, true], "
                "\"fileContents\": \"/9j/4A==\", \"contentType\": "
                "\"image/jpeg\"}", UNICO_PAYLOAD_OK);
    expect_same("fileContents as a value first", "{\"x\": \"fileContents\","
                " \"fileContents\": \"/9j/4A==\", \"contentType\": "
                "\"image/jpeg\"}", UNICO_PAYLOAD_OK);
    expect_same("only nested fileContents", "{\"x\": {\"fileContents\": "
                "\"/9j/4A==\"}, \"contentType\": \"image/jpeg\"}",
                UNICO_PAYLOAD_MISSING_FIELD);
    expect_same("fileContents number", "{\"fileContents\": 12, "
                "\"contentType\": \"image/jpeg\"}", UNICO_PAYLOAD_WRONG_TYPE);
    expect_same("fileContents object", "{\"fileContents\": {\"fileContents\":"
                " \"/9j/4A==\"}, \"contentType\": \"image/jpeg\"}",
                UNICO_PAYLOAD_WRONG_TYPE);
    expect_same("fileContents array", "{\"fileContents\": [\"/9j/4A==\"], "
                "\"contentType\": \"image/jpeg\"}", UNICO_PAYLOAD_WRONG_TYPE);
    expect_same("fileContents null", "{\"fileContents\": null, "
                "\"contentType\": \"image/jpeg\"}", UNICO_PAYLOAD_WRONG_TYPE);
    expect_same("fileContents a key's value, no colon", "{\"fileContents\" "
                "\"/9j/4A==\", \"contentType\": \"image/jpeg\"}",
                UNICO_PAYLOAD_BAD_JSON);
    expect_same("fileContents after a misplaced key", "{\"a\" \"b\", "
                "\"fileContents\": \"/9j/4A==\", \"contentType\": "
                "\"image/jpeg\"}", UNICO_PAYLOAD_BAD_JSON);
    expect_same("fileContents after a bad number", "{\"a\": 1.e5, "
                "\"fileContents\": \"/9j/4A==\", \"contentType\": "
                "\"image/jpeg\"}", UNICO_PAYLOAD_BAD_JSON);
    expect_same("fileContents after mismatched brackets", "{\"a\": [1}, "
                "\"fileContents\": \"/9j/4A==\", \"contentType\": "
                "\"image/jpeg\"}", UNICO_PAYLOAD_BAD_JSON);
    expect_same("a bad string before", "{\"a\": \"\x01\", "
                "\"fileContents\": \"/9j/4A==\", \"contentType\": "
                "\"image/jpeg\"}", UNICO_PAYLOAD_BAD_JSON);
    expect_same("after the object", "{\"contentType\": \"image/jpeg\"} "
                "{\"fileContents\": \"/9j/4A==\"}", UNICO_PAYLOAD_BAD_JSON);
    expect_same("bad content type first", "{\"contentType\": \"text/html\", "
                "\"fileContents\": \"\n\"}", UNICO_PAYLOAD_BAD_CONTENT_TYPE);
    expect_same("trailing garbage after a bad string", "{\"fileContents\": "
                "\"\n\", \"contentType\": \"image/jpeg\"} x",
                UNICO_PAYLOAD_BAD_JSON);
    expect_same("trailing garbage after a good string", "{\"fileContents\": "
                "\"/9j/4A==\", \"contentType\": \"image/jpeg\"} x",
                UNICO_PAYLOAD_BAD_JSON);
    expect_same("empty string", "{\"fileContents\": \"\", "
                "\"contentType\": \"image/jpeg\"}", UNICO_PAYLOAD_EMPTY_IMAGE);

    /* blanks around ':' and ',' */

    expect_same("no blanks", "{\"fileContents\":\"/9j/4A==\","
                "\"contentType\":\"image/jpeg\"}", UNICO_PAYLOAD_OK);
    expect_same("blanks everywhere", " \r\n{ \t\"fileContents\" \r\n: \t"
                "\"/9j/4A==\" \n, \"contentType\"\t:\"image/jpeg\" \n} \n",
                UNICO_PAYLOAD_OK);
    expect_same("\\v and \\f between tokens", "{\"fileContents\"\v:\f"
                "\"/9j/4A==\",\"contentType\":\"image/jpeg\"}",
                UNICO_PAYLOAD_OK);

    /* too large: the size check before the content's, as yajl has it */

    expect_same_rc("too large, raw LF later", "{\"fileContents\": "
                   "\"/9j/4AAAAAAAAAAA\n\", \"contentType\": \"image/jpeg\"}",
                   sizeof("{\"fileContents\": \"/9j/4AAAAAAAAAAA\n\", "
                          "\"contentType\": \"image/jpeg\"}") - 1, 3,
                   UNICO_PAYLOAD_BAD_JSON);
    expect_same_rc("too large, bad base64 later", "{\"fileContents\": "
                   "\"/9j/4AAAAAAAAAAA*\", \"contentType\": \"image/jpeg\"}",
                   sizeof("{\"fileContents\": \"/9j/4AAAAAAAAAAA*\", "
                          "\"contentType\": \"image/jpeg\"}") - 1, 3,
                   UNICO_PAYLOAD_TOO_LARGE);
    expect_same_rc("too large, escaped, bad escape later",
                   "{\"fileContents\": \"\\/9j/4AAAAAAAAAAA\\x\", "
                   "\"contentType\": \"image/jpeg\"}",
                   sizeof("{\"fileContents\": \"\\/9j/4AAAAAAAAAAA\\x\", "
                          "\"contentType\": \"image/jpeg\"}") - 1, 3,
                   UNICO_PAYLOAD_BAD_JSON);
    expect_same_rc("too large, escaped, padded", "{\"fileContents\": "
                   "\"\\/9j\\/4AAA4A\\u003d\\u003D\", \"contentType\": "
                   "\"image/jpeg\"}",
                   sizeof("{\"fileContents\": \"\\/9j\\/4AAA4A\\u003d"
                          "\\u003D\", \"contentType\": \"image/jpeg\"}") - 1,
                   6, UNICO_PAYLOAD_TOO_LARGE);
    expect_same_rc("not too large, escaped, padded", "{\"fileContents\": "
                   "\"\\/9j\\/4AAA4A\\u003d\\u003D\", \"contentType\": "
                   "\"image/jpeg\"}",
                   sizeof("{\"fileContents\": \"\\/9j\\/4AAA4A\\u003d"
                          "\\u003D\", \"contentType\": \"image/jpeg\"}") - 1,
                   7, UNICO_PAYLOAD_OK);

    /* every cut, every byte replaced, removed or doubled */

    len = strlen(doc);
    m = xmalloc(len + 1);
    good = 1;

    for (n = 0; n < len; n++) {
        good = same_as_reference(doc, n, MAX_IMAGE, NULL) && good;
    }

    ok(good, "truncated at every byte: as the reference");

    good = 1;

    for (n = 0; n < len; n++) {

        for (k = 0; k < sizeof(bytes); k++) {
            memcpy(m, doc, len);
            m[n] = bytes[k];

            if (!same_as_reference(m, len, MAX_IMAGE, NULL)
                || !same_as_reference(m, len, 3, NULL))
            {
                diag("byte %zu replaced with 0x%02x", n,
                     (unsigned) (unsigned char) bytes[k]);
                good = 0;
            }
        }

        memcpy(m, doc, n);
        memcpy(m + n, doc + n + 1, len - n - 1);
        good = same_as_reference(m, len - 1, MAX_IMAGE, NULL) && good;

        memcpy(m, doc, n + 1);
        memcpy(m + n + 1, doc + n, len - n);
        good = same_as_reference(m, len + 1, MAX_IMAGE, NULL) && good;
    }

    ok(good, "every byte replaced, removed or doubled: as the reference");

    free(m);
    sb_free(&sb);
    sb_free(&b);
}


static void
test_strings(void)
{
    static const char  *keywords[] = {
        "ok", "bad_json", "not_object", "missing_field", "wrong_type",
        "duplicate_field", "bad_content_type", "bad_base64", "empty_image",
        "image_mismatch", "image_too_large", "no_memory"
    };

    int     good;
    size_t  i;

    good = 1;

    for (i = 0; i < sizeof(keywords) / sizeof(keywords[0]); i++) {
        if (strcmp(unico_payload_strerror((unico_payload_rc_e) i),
                   keywords[i]) != 0)
        {
            diag("rc %zu: %s", i,
                 unico_payload_strerror((unico_payload_rc_e) i));
            good = 0;
        }
    }

    ok(good, "unico_payload_strerror() keywords");

    ok(strcmp(unico_image_mime(UNICO_IMAGE_JPEG), "image/jpeg") == 0
       && strcmp(unico_image_mime(UNICO_IMAGE_PNG), "image/png") == 0
       && unico_image_mime(UNICO_IMAGE_NONE) == NULL,
       "unico_image_mime()");
}


static int
decode_is(const char *src, const char *want, size_t want_len)
{
    int             good;
    size_t          len, n;
    unsigned char  *in, *out;

    /* into a buffer of exactly unico_base64_decoded_max() bytes */

    len = strlen(src);
    in = xmalloc(len);
    memcpy(in, src, len);
    out = xmalloc(unico_base64_decoded_max(len));

    n = unico_base64_decode(out, in, len);

    if (want == NULL) {
        good = (n == (size_t) -1);

    } else {
        good = (n == want_len && memcmp(out, want, n) == 0);
    }

    /* in place */

    n = unico_base64_decode(in, in, len);

    if (want == NULL) {
        good = good && (n == (size_t) -1);

    } else {
        good = good && (n == want_len && memcmp(in, want, n) == 0);
    }

    free(in);
    free(out);

    return good;
}


static void
test_base64(void)
{
    static const struct {
        const char  *padded;
        const char  *unpadded;
        const char  *text;
    } rfc[] = {
        { "", "", "" },
        { "Zg==", "Zg", "f" },
        { "Zm8=", "Zm8", "fo" },
        { "Zm9v", "Zm9v", "foo" },
        { "Zm9vYg==", "Zm9vYg", "foob" },
        { "Zm9vYmE=", "Zm9vYmE", "fooba" },
        { "Zm9vYmFy", "Zm9vYmFy", "foobar" }
    };

    static const char  *bad[] = {
        "Z", "Z===", "Zm9vY", "=", "==", "Zg=", "Zg===", "Zm8==", "Zm9v=",
        "Zg==Zg==", "Zg== x", "Zg==\n=", "Zm9v*", "Zm9v\x80", "Zm9v\v",
        "Z\\g=", "Zm9vYmFyZm9vYmFyZm9vYmFyZm9vYmF-", "Zm9vYmFyZm9vYmFy=Zm9v"
    };

    int             good;
    char           *enc;
    size_t          i, len, n, k, r;
    sb_t            sb;
    uint32_t        seed;
    unsigned char  *data, *buf;

    for (i = 0; i < sizeof(rfc) / sizeof(rfc[0]); i++) {
        ok(decode_is(rfc[i].padded, rfc[i].text, strlen(rfc[i].text)),
           "base64 RFC 4648 \"%s\" -> \"%s\"", rfc[i].padded, rfc[i].text);
        ok(decode_is(rfc[i].unpadded, rfc[i].text, strlen(rfc[i].text)),
           "base64 RFC 4648 unpadded \"%s\" -> \"%s\"", rfc[i].unpadded,
           rfc[i].text);
    }

    ok(decode_is(" Zm9v\r\nYmFy\t", "foobar", 6)
       && decode_is("Z m 9 v Y g = =", "foob", 4)
       && decode_is("Zg=\r\n=\n", "f", 1)
       && decode_is("\n\n\n", "", 0),
       "base64 blanks anywhere");

    ok(decode_is("Zh==", "f", 1) && decode_is("Zm9=", "fo", 2),
       "base64 non-zero trailing bits accepted");

    ok(decode_is("QUJDREVGR0hJSktMTU5PUFFSU1RVVldYWVo=",
                 "ABCDEFGHIJKLMNOPQRSTUVWXYZ", 26)
       && decode_is("++++////AAAAaaaa0000zzzz9999", "\xfb\xef\xbe\xff\xff"
                    "\xff\x00\x00\x00\x69\xa6\x9a\xd3\x4d\x34\xcf\x3c\xf3"
                    "\xf7\xdf\x7d", 21),
       "base64 whole alphabet");

    good = 1;

    for (i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        if (!decode_is(bad[i], NULL, 0)) {
            diag("accepted \"%s\"", bad[i]);
            good = 0;
        }
    }

    ok(good, "base64 errors: bad characters, misplaced '=', dangling sextet");

    good = 1;

    for (k = 0; k < 256; k++) {
        char  s[6] = "Zm9v";

        s[3] = (char) k;

        if (strchr("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
                   "0123456789+/\r\n\t =", (int) k) == NULL || k == 0)
        {
            if (unico_base64_decode((unsigned char *) s,
                                    (unsigned char *) s, 4)
                != (size_t) -1)
            {
                diag("accepted character %zu", k);
                good = 0;
            }
        }
    }

    ok(good, "base64 every character outside the alphabet refused");

    /* random data of every length 0 .. 1200, in place and not */

    memset(&sb, 0, sizeof(sb));
    seed = 12345;
    good = 1;

    for (len = 0; len <= 1200 && good; len++) {
        data = xmalloc(len);

        for (i = 0; i < len; i++) {
            seed = seed * 1103515245 + 12345;
            data[i] = (unsigned char) (seed >> 16);
        }

        for (k = ENC_PLAIN; k <= ENC_UNPADDED && good; k++) {
            enc = b64(data, len, k == ENC_PLAIN);
            n = strlen(enc);

            /* with \r\n every 76 characters, as MIME does */

            sb.len = 0;
            sb_add(&sb, "");

            for (r = 0; r < n; r += 76) {
                sb_addn(&sb, enc + r, (n - r < 76) ? n - r : 76);
                sb_add(&sb, "\r\n");
            }

            buf = xmalloc(unico_base64_decoded_max(n));
            r = unico_base64_decode(buf, (unsigned char *) enc, n);
            good = (r == len && memcmp(buf, data, len) == 0);
            free(buf);

            r = unico_base64_decode((unsigned char *) enc,
                                    (unsigned char *) enc, n);
            good = good && (r == len && memcmp(enc, data, len) == 0);

            r = unico_base64_decode((unsigned char *) sb.data,
                                    (unsigned char *) sb.data, sb.len);
            good = good && (r == len && memcmp(sb.data, data, len) == 0);

            if (!good) {
                diag("length %zu, %s", len, k ? "unpadded" : "padded");
            }

            free(enc);
        }

        free(data);
    }

    sb_free(&sb);

    ok(good, "base64 in place (dst == src) and not, lengths 0 .. 1200");
}


static void
test_uuid(void)
{
    static const struct {
        const char  *s;
        size_t       len;
        int          valid;
        const char  *desc;
    } cases[] = {
        { "7bd2c3e4-52f1-4b7a-9c51-4a4f7c0e2b11", 36, 1, "canonical lower" },
        { "7BD2C3E4-52F1-4B7A-9C51-4A4F7C0E2B11", 36, 1, "upper" },
        { "7bD2c3E4-52f1-4B7a-9C51-4a4F7c0E2b11", 36, 1, "mixed" },
        { "00000000-0000-0000-0000-000000000000", 36, 1, "nil, no version" },
        { "7bd2c3e4-52f1-4b7a-9c51-4a4f7c0e2b1", 35, 0, "35 chars" },
        { "7bd2c3e4-52f1-4b7a-9c51-4a4f7c0e2b111", 37, 0, "37 chars" },
        { "7bd2c3e452-f1-4b7a-9c51-4a4f7c0e2b11", 36, 0, "hyphen misplaced" },
        { "7bd2c3e4-52f1-4b7a-9c514-a4f7c0e2b11", 36, 0, "last hyphen off" },
        { "7bd2c3e4052f1-4b7a-9c51-4a4f7c0e2b11", 36, 0, "hyphen missing" },
        { "7bd2c3e4-52f1-4b7a-9c51-4a4f7c0e2b1g", 36, 0, "non-hex 'g'" },
        { "7bd2c3e4-52f1-4b7a-9c51-4a4f7c0e2b1G", 36, 0, "non-hex 'G'" },
        { "7bd2c3e4-52f1-4b7a-9c51-4a4f\0" "c0e2b11", 36, 0, "embedded NUL" },
        { "../../../../../../../../etc/passwd00", 36, 0, "\"../\"" },
        { "7bd2c3e4-52f1-4b7a-9c51-4a4f7c0e%2F1", 36, 0, "\"%2F\"" },
        { "{bd2c3e4-52f1-4b7a-9c51-4a4f7c0e2b1}", 36, 0, "braces" },
        { "7bd2c3e4 52f1 4b7a 9c51 4a4f7c0e2b11", 36, 0, "blanks" },
        { "", 0, 0, "empty" }
    };

    size_t  i;

    for (i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        unsigned char  *p;

        p = xmalloc(cases[i].len);
        memcpy(p, cases[i].s, cases[i].len);

        ok(unico_uuid_valid(p, cases[i].len) == cases[i].valid,
           "uuid %s: %s", cases[i].desc,
           cases[i].valid ? "valid" : "invalid");

        free(p);
    }

    ok(unico_uuid_valid(NULL, 0) == 0, "uuid NULL, 0: invalid");
}


int
main(int argc, char **argv)
{
    size_t     i;
    fixture_t  fx[] = {
        { "selfie-360x480.jpg", UNICO_IMAGE_JPEG, NULL, 0 },
        { "selfie-720x960.jpg", UNICO_IMAGE_JPEG, NULL, 0 },
        { "selfie-1080x1440.jpg", UNICO_IMAGE_JPEG, NULL, 0 },
        { "selfie-480x640.png", UNICO_IMAGE_PNG, NULL, 0 }
    };

    if (argc != 2) {
        fprintf(stderr, "usage: %s <fixtures dir>\n", argv[0]);
        return 2;
    }

    for (i = 0; i < sizeof(fx) / sizeof(fx[0]); i++) {
        fx[i].data = read_file(argv[1], fx[i].name, &fx[i].len);

        if (fx[i].data == NULL || fx[i].len < 1000) {
            printf("Bail out! cannot read fixture %s/%s\n", argv[1],
                   fx[i].name);
            return 2;
        }
    }

    test_fixtures(fx, sizeof(fx) / sizeof(fx[0]));
    test_limits(fx, sizeof(fx) / sizeof(fx[0]));
    test_errors();
    test_fast_path(fx, sizeof(fx) / sizeof(fx[0]));
    test_base64();
    test_uuid();
    test_strings();
    test_stream_edges();

    if (!ok(stream_bad == 0, "stream = unico_payload_parse() on all %u "
            "documents above, whole, byte by byte and split anywhere "
            "(short ones at every byte)", stream_docs))
    {
        diag("%u documents differ", stream_bad);
    }

    diag("%u stream runs fell back to the full parse", stream_fallbacks);

    for (i = 0; i < sizeof(fx) / sizeof(fx[0]); i++) {
        free(fx[i].data);
    }

    printf("1..%u\n", tests);

    if (failed) {
        diag("failed %u of %u", failed, tests);
        return 1;
    }

    return 0;
}
