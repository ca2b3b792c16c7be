
/*
 * Copyright (C) ngx_unico_selfie_module authors
 *
 * The pure core: no nginx types, no allocation on the caller's behalf
 * beyond yajl's own bounded parser state.  Everything that sees bytes from
 * outside the gateway (Unico's JSON, the base64 inside it, the processId of
 * the client's URL) is checked here, so that it can be unit-tested and
 * fuzzed without a server.
 */


#ifndef _UNICO_SELFIE_PAYLOAD_H_INCLUDED_
#define _UNICO_SELFIE_PAYLOAD_H_INCLUDED_


#include <stddef.h>
#include <stdint.h>

#include <yajl/yajl_common.h>

#include "unico_selfie_base64.h"


#define UNICO_UUID_LEN  36


typedef enum {
    UNICO_IMAGE_NONE = 0,
    UNICO_IMAGE_JPEG,
    UNICO_IMAGE_PNG
} unico_image_type_e;


typedef enum {
    UNICO_PAYLOAD_OK = 0,
    UNICO_PAYLOAD_BAD_JSON,           /* not JSON, invalid or truncated */
    UNICO_PAYLOAD_NOT_OBJECT,         /* top level is not an object */
    UNICO_PAYLOAD_MISSING_FIELD,      /* fileContents or contentType absent */
    UNICO_PAYLOAD_WRONG_TYPE,         /* a field is not a string */
    UNICO_PAYLOAD_DUPLICATE_FIELD,    /* a field appears twice */
    UNICO_PAYLOAD_BAD_CONTENT_TYPE,   /* not image/jpeg nor image/png */
    UNICO_PAYLOAD_BAD_BASE64,         /* fileContents is not base64 */
    UNICO_PAYLOAD_EMPTY_IMAGE,        /* fileContents decodes to nothing */
    UNICO_PAYLOAD_IMAGE_MISMATCH,     /* bytes are not what contentType says */
    UNICO_PAYLOAD_TOO_LARGE,          /* decoded image over the maximum */
    UNICO_PAYLOAD_NO_MEMORY           /* the parser could not allocate */
} unico_payload_rc_e;


typedef struct {
    unsigned char       *data;        /* decoded image, inside the input */
    size_t               len;
    unico_image_type_e   type;
} unico_image_t;


/*
 * Parses Unico's Get Selfie body {"fileContents": "<base64>",
 * "contentType": "image/jpeg" | "image/png"} held in buf[0 .. len).
 *
 * The base64 is decoded in place: on success out->data points into buf,
 * which the call has overwritten.  Fields may come in any order, other
 * fields are ignored, JSON escapes (\/, \n, \u002F ...) inside the base64
 * are accepted, and so are line breaks and blanks between base64 quanta.
 * A decoded image larger than max_image bytes is refused without being
 * decoded whole.
 *
 * buf must be writable and hold the whole body contiguously.  On success
 * out->data == buf and the image is buf[0 .. out->len); the rest of buf is
 * garbage.  On failure out is {NULL, 0, UNICO_IMAGE_NONE}, and buf may
 * have been overwritten all the same.  The first problem met in document
 * order is the one returned.
 */
unico_payload_rc_e unico_payload_parse(unsigned char *buf, size_t len,
    size_t max_image, unico_image_t *out);

/*
 * The same, without the fast path that keeps yajl from lexing the base64
 * (yajl parses the whole document byte by byte): the reference that the
 * unit tests and the fuzzer compare unico_payload_parse() with.
 */
unico_payload_rc_e unico_payload_parse_reference(unsigned char *buf,
    size_t len, size_t max_image, unico_image_t *out);

/*
 * Allocation.  Every function below that takes a const yajl_alloc_funcs *
 * allocates through it (yajl's parser state, and the stream's own
 * buffers); NULL means libc's malloc(), realloc() and free().
 *
 * A memory pool, such as nginx's request pool, has an allocation function
 * and nothing else: no realloc, no free (memory goes back when the pool is
 * destroyed).  yajl needs realloc for its lexer and decode buffers, which
 * grow by doubling.  unico_pool_alloc_init() makes yajl_alloc_funcs out of
 * a pool's allocation function: each block is preceded by a 16-byte header
 * that holds its size (16 keeps the block aligned for any type); realloc
 * allocates a new block and copies the old one's bytes into it when it
 * grows (a shrink returns the same block), and free does nothing.  Since
 * yajl's buffers double, what a parse leaves in the pool is at most twice
 * its largest buffer, plus the headers.  The unico_pool_alloc_t must live
 * as long as the parser or stream that uses its funcs.
 *
 * Glue: static void *f(void *pool, size_t n) { return ngx_palloc(pool, n); }
 * then unico_pool_alloc_init(&pa, f, r->pool) and pass &pa.funcs.
 */

typedef void *(*unico_pool_alloc_pt)(void *pool, size_t size);

typedef struct {
    yajl_alloc_funcs      funcs;      /* what to pass on: funcs.ctx = this */
    unico_pool_alloc_pt   alloc;
    void                 *pool;
} unico_pool_alloc_t;


void unico_pool_alloc_init(unico_pool_alloc_t *pa, unico_pool_alloc_pt alloc,
    void *pool);

/* unico_payload_parse() with yajl's memory from af (NULL: libc). */
unico_payload_rc_e unico_payload_parse_alloc(unsigned char *buf, size_t len,
    size_t max_image, const yajl_alloc_funcs *af, unico_image_t *out);


/*
 * Streaming decode: the body as it arrives, in any number of chunks, with
 * the image's base64 decoded straight into the caller's output buffer.
 *
 *     st = unico_payload_stream_create(out, out_cap, max_image, body_hint,
 *                                      af);
 *     for each chunk: unico_payload_stream_feed(st, chunk, len);
 *     rc = unico_payload_stream_finish(st, &image);
 *
 * Memory: out (1.0x the image when sized from Content-Length) and about
 * 3 KB: the stream (with 256 bytes for the prefix) and yajl's state; for
 * the 85 KB fixture in 4 KB chunks, 3,088 bytes in 7 blocks from a pool.
 *
 * finish() returns exactly what unico_payload_parse() returns for the
 * concatenation of the chunks, whatever the split (t/fuzz/fuzz_stream.c
 * checks it for every input and every split the fuzzer picks), and on
 * success the same bytes and type, with image.data == out.
 *
 * How: a small scanner follows the envelope, as unico_payload_parse()'s
 * pre-scan does, up to the opening quote of the top-level fileContents
 * string; the bytes so far (the prefix, some 20 bytes from Unico) are
 * kept and then given to yajl, which must agree that the next token is
 * that string's value.  The string's text is then unescaped, checked as
 * yajl would check it (control characters, UTF-8, escapes), measured and
 * base64-decoded as it arrives, whole quanta through the SSSE3/AVX2
 * decoder, into out; nothing of it is kept.  From its closing quote on,
 * every chunk goes to yajl as it comes, so the rest of the envelope is
 * not kept either.  The first problem in document order wins, as in
 * unico_payload_parse().
 *
 * Fallback: when the envelope is not what the scanner follows (the body
 * does not start with '{', fileContents is not a string, a byte the
 * scanner does not know before the string, the body ends first) or yajl
 * does not see the prefix as the scanner does, the stream keeps the raw
 * body instead, from its first byte, and finish() runs
 * unico_payload_parse_alloc() on it and copies the image into out.  The
 * raw body lives in a buffer from af, sized body_hint + 1 bytes (give
 * Content-Length; 0 when unknown) and grown by doubling when the body is
 * longer; up to 256 bytes (the prefix, always) live inside the stream.
 * The switch can only happen before the first byte of the fileContents
 * string is consumed, so at most the prefix is copied.  A body that falls
 * back costs its size again, from af, for this request only.
 *
 * out needs out_cap >= min(max_image, unico_base64_decoded_max(total
 * length of the body)) bytes: then every image that is not too large fits.
 * Sizes from Content-Length * 3 / 4 (+ 3) or from max_image both do.  An
 * image that would be accepted but does not fit out_cap gives
 * UNICO_PAYLOAD_NO_MEMORY.  out is written from the first chunk of the
 * string on, and holds garbage after a failure.
 *
 * The stream is allocated from af (NULL: libc) and holds a yajl handle:
 * finish() releases the handle and the buffers, and
 * unico_payload_stream_destroy() the stream, after finish() or instead of
 * it (with a pool, frees are no-ops: the pool takes it all back).  feed()
 * returns UNICO_PAYLOAD_OK, or UNICO_PAYLOAD_NO_MEMORY when an allocation
 * failed (finish() then says so too); once the outcome is known (a syntax
 * error, say), later chunks are ignored at no cost.  No function keeps a
 * pointer into a chunk after it returns.
 */

typedef struct unico_payload_stream_s  unico_payload_stream_t;


unico_payload_stream_t *unico_payload_stream_create(unsigned char *out,
    size_t out_cap, size_t max_image, size_t body_hint,
    const yajl_alloc_funcs *af);
unico_payload_rc_e unico_payload_stream_feed(unico_payload_stream_t *st,
    const unsigned char *chunk, size_t len);
unico_payload_rc_e unico_payload_stream_finish(unico_payload_stream_t *st,
    unico_image_t *out);
void unico_payload_stream_destroy(unico_payload_stream_t *st);

/*
 * The out_cap a stream needs for a body of body_len bytes (its
 * Content-Length), or of any length when body_len is (size_t) -1.
 */
#define unico_payload_stream_out_size(body_len, max_image)                    \
    (((body_len) != (size_t) -1                                               \
      && unico_base64_decoded_max(body_len) < (max_image))                    \
     ? unico_base64_decoded_max(body_len) : (max_image))

/* 1 when the stream fell back to keeping the raw body (tests, logs). */
int unico_payload_stream_fell_back(const unico_payload_stream_t *st);


/* A short, static, log-friendly keyword for a result ("bad_json", ...). */
const char *unico_payload_strerror(unico_payload_rc_e rc);

/* The MIME type of a format: "image/jpeg", "image/png", or NULL. */
const char *unico_image_mime(unico_image_type_e type);

/* 1 when p[0 .. len) is a canonical UUID: 8-4-4-4-12 hex digits, any case. */
int unico_uuid_valid(const unsigned char *p, size_t len);

#endif /* _UNICO_SELFIE_PAYLOAD_H_INCLUDED_ */
