
/*
 * Copyright (C) ngx_unico_selfie_module authors
 *
 * The one base64 codec of the module (RFC 4648), no nginx types:
 *
 *   - the forgiving decoder of Unico's fileContents (standard alphabet,
 *     blanks skipped, padding optional), table-driven, with SSSE3 and AVX2
 *     block decoders chosen at run time on x86 (the scalar one is the
 *     reference: every decoder gives the same answer on every input);
 *   - a strict, canonical decoder for keys and signatures (standard and/or
 *     url alphabet, no blanks, padding as asked, unused bits zero);
 *   - encoders, standard (padded) and base64url (unpadded), for JWTs and
 *     signed URLs.
 *
 * Plain C99 with GCC/clang function attributes for the vector code, so it
 * builds with Debian's CFLAGS (-O2, no -march); no global mutable state.
 * -DUNICO_BASE64_NO_SIMD builds the scalar decoder alone (benchmarks);
 * elsewhere than x86 with GCC or clang, it is the only one.
 */


#ifndef _UNICO_SELFIE_BASE64_H_INCLUDED_
#define _UNICO_SELFIE_BASE64_H_INCLUDED_


#include <stddef.h>
#include <stdint.h>


/* the decoders that the forgiving decoder can run on */

typedef enum {
    UNICO_BASE64_AUTO = 0,          /* the best that the CPU has */
    UNICO_BASE64_SCALAR,
    UNICO_BASE64_SSSE3,
    UNICO_BASE64_AVX2
} unico_base64_impl_e;


/* alphabets and padding of the strict decoder */

#define UNICO_BASE64_STD        0x01    /* "+/" */
#define UNICO_BASE64_URL        0x02    /* "-_" */
#define UNICO_BASE64_PADDED     0x04    /* "=" allowed at the end */

#define UNICO_BASE64_MALFORMED  (-1)
#define UNICO_BASE64_TOO_LONG   (-2)


/* The most bytes unico_base64_decode() can produce from len input bytes. */
#define unico_base64_decoded_max(len)  (((len) + 3) / 4 * 3)

/* The length of the padded base64 of n bytes. */
#define unico_base64_encoded_len(n)    (((n) + 2) / 3 * 4)

/* The length of the unpadded base64url of n bytes. */
#define unico_base64url_encoded_len(n)                                        \
    (((n) / 3) * 4 + ((n) % 3 ? (n) % 3 + 1 : 0))


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

/*
 * The same with the block decoder chosen by the caller (tests, fuzzers,
 * benchmarks); an implementation that the CPU lacks runs as the best one
 * it has.
 */
size_t unico_base64_decode_with(unico_base64_impl_e impl, unsigned char *dst,
    const unsigned char *src, size_t len);

/*
 * The decoder for the raw text of a JSON string: with raw set, src is text
 * without escapes, where CR, LF and TAB are not allowed, so only SP is
 * skipped.  On failure *stop is where the quantum that failed starts:
 * src[0 .. *stop) held only sextets and blanks, and (*stop .. src + len)
 * has not been written.  Otherwise as unico_base64_decode().
 */
size_t unico_base64_decode_json(unsigned char *dst, const unsigned char *src,
    size_t len, unsigned raw, const unsigned char **stop);

/*
 * Decodes the longest prefix of src[0 .. len) made of whole quanta of
 * sextets (no blanks, no padding) into dst, writing nothing past
 * dst + room; returns the number of characters taken, a multiple of 4:
 * 3/4 of it are the bytes written.  The streaming decoder's bulk step.
 */
size_t unico_base64_decode_quanta(unsigned char *dst, size_t room,
    const unsigned char *src, size_t len);

/* What unico_base64_decode() and the others run on this CPU. */
unico_base64_impl_e unico_base64_impl(void);

/* "scalar", "ssse3" or "avx2". */
const char *unico_base64_impl_name(unico_base64_impl_e impl);

/*
 * The fewest bytes that s[0 .. len) can decode to, if it is valid: exact
 * for valid base64, and only an estimate for invalid base64, which is
 * refused either way.  It reads the string once, without writing.
 */
size_t unico_base64_decoded_min(const unsigned char *s, size_t len);

/*
 * Counts, in s[0 .. len) after what was counted before, the characters
 * that are not blanks (*chars) and the '=' that end them (*pad): the
 * streaming form of unico_base64_decoded_min(), which is then
 * unico_base64_count_min(chars, pad).
 */
void unico_base64_count(const unsigned char *s, size_t len, size_t *chars,
    size_t *pad);

#define unico_base64_count_min(chars, pad)                                    \
    ((((chars) - ((pad) < 2 ? (pad) : 2)) / 4 * 3)                            \
     + (((chars) - ((pad) < 2 ? (pad) : 2)) % 4 * 3 / 4))

/* 1 when c is CR, LF, TAB or SP: what the forgiving decoder skips. */
#define unico_base64_blank(c)                                                 \
    ((c) == '\r' || (c) == '\n' || (c) == '\t' || (c) == ' ')

/* The sextet of c in the standard alphabet, or -1. */
int unico_base64_sextet(unsigned char c);

/*
 * The strict decoder: src[0 .. len) in the alphabets of flags
 * (UNICO_BASE64_STD, UNICO_BASE64_URL or both, even mixed), no blanks;
 * with UNICO_BASE64_PADDED, "=" may complete the last quantum when len is
 * a multiple of 4.  The unused bits of the last character must be zero, so
 * that one value has one encoding.  Writes at most max bytes to dst.
 * Returns the length, UNICO_BASE64_MALFORMED (-1), or UNICO_BASE64_TOO_LONG
 * (-2) when the result would not fit.
 */
long unico_base64_decode_strict(unsigned char *dst, size_t max,
    const unsigned char *src, size_t len, unsigned flags);

/* Strict, unpadded base64url (JWT, signed URLs). */
#define unico_base64url_decode(dst, max, src, len)                            \
    unico_base64_decode_strict(dst, max, src, len, UNICO_BASE64_URL)

/*
 * Writes the padded standard base64 of src[0 .. len) to dst, which needs
 * unico_base64_encoded_len(len) bytes; returns that length.  No NUL.
 */
size_t unico_base64_encode(unsigned char *dst, const unsigned char *src,
    size_t len);

/*
 * Writes the unpadded base64url of src[0 .. len) to dst, which needs
 * unico_base64url_encoded_len(len) bytes; returns that length.  No NUL.
 */
size_t unico_base64url_encode(unsigned char *dst, const unsigned char *src,
    size_t len);


#endif /* _UNICO_SELFIE_BASE64_H_INCLUDED_ */
