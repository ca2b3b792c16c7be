
/*
 * Copyright (C) ngx_unico_selfie_module authors
 * SPDX-License-Identifier: BSD-2-Clause
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

/* A short, static, log-friendly keyword for a result ("bad_json", ...). */
const char *unico_payload_strerror(unico_payload_rc_e rc);

/* The MIME type of a format: "image/jpeg", "image/png", or NULL. */
const char *unico_image_mime(unico_image_type_e type);

/* 1 when p[0 .. len) is a canonical UUID: 8-4-4-4-12 hex digits, any case. */
int unico_uuid_valid(const unsigned char *p, size_t len);

/*
 * Decodes standard base64 (RFC 4648 section 4) from src[0 .. len) into dst,
 * skipping CR, LF, TAB and SP; padding optional but, when present, final.
 * dst may equal src (in-place) or lie anywhere before it, or be another
 * buffer; either way it needs room for unico_base64_decoded_max(len)
 * bytes, as the decoder may write scratch bytes past the ones it returns.
 * Returns the number of bytes written, or (size_t) -1 on a character
 * outside the alphabet, a misplaced or incomplete padding ("Zg=") or a
 * dangling single sextet.  Left-over bits of the last quantum are ignored.
 */
size_t unico_base64_decode(unsigned char *dst, const unsigned char *src,
    size_t len);

/* The most bytes unico_base64_decode() can produce from len input bytes. */
#define unico_base64_decoded_max(len)  (((len) + 3) / 4 * 3)


#endif /* _UNICO_SELFIE_PAYLOAD_H_INCLUDED_ */
