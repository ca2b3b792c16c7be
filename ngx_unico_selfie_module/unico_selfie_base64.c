
/*
 * Copyright (C) ngx_unico_selfie_module authors
 *
 * The one base64 codec: the forgiving decoder of Unico's fileContents, its
 * SSSE3 and AVX2 block decoders, the strict decoder of keys and signatures,
 * and the encoders.  Plain C99, no nginx types, no global mutable state:
 * every function is reentrant.
 */


#include <string.h>

#include "unico_selfie_base64.h"


#if !defined(UNICO_BASE64_NO_SIMD) && defined(__GNUC__)                      \
    && (defined(__x86_64__) || defined(__i386__))
#define UNICO_B64_X86  1
#include <immintrin.h>
#else
#define UNICO_B64_X86  0
#endif



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
 * The vector block decoders (Wojciech Mula's and Daniel Lemire's method,
 * as aklomp/base64 has it): 16 (SSSE3) or 32 (AVX2) characters at a time,
 * classified by two nibble lookups, turned into sextets by one more, and
 * packed to 12 or 24 bytes with multiply-adds and a shuffle.  A block that
 * holds anything but sextets (a blank, a pad, an invalid character) stops
 * them, untouched: the scalar decoder takes it from there, so the vector
 * code only ever decodes what the scalar one would decode the same way,
 * and every error, blank and padding rule is the scalar decoder's.
 *
 * Each takes blocks while a whole one can be read from src[0 .. len) and
 * its 16 or 32-byte store, of which 12 or 24 bytes are the output, fits in
 * dst[0 .. room); it returns the characters taken, a multiple of 16.  The
 * store lands at or before the characters read, so in place works as long
 * as dst <= src.
 */

#if (UNICO_B64_X86)

static size_t unico_b64_ssse3(unsigned char *dst, size_t room,
    const unsigned char *src, size_t len);
static size_t unico_b64_avx2(unsigned char *dst, size_t room,
    const unsigned char *src, size_t len);


__attribute__((target("ssse3")))
static size_t
unico_b64_ssse3(unsigned char *dst, size_t room, const unsigned char *src,
    size_t len)
{
    size_t   i, o;
    __m128i  str, hi_nib, lo_nib, hi, lo, eq_2f, roll, ab_bc, out;

    const __m128i  lut_lo = _mm_setr_epi8(
        0x15, 0x11, 0x11, 0x11, 0x11, 0x11, 0x11, 0x11,
        0x11, 0x11, 0x13, 0x1a, 0x1b, 0x1b, 0x1b, 0x1a);
    const __m128i  lut_hi = _mm_setr_epi8(
        0x10, 0x10, 0x01, 0x02, 0x04, 0x08, 0x04, 0x08,
        0x10, 0x10, 0x10, 0x10, 0x10, 0x10, 0x10, 0x10);
    const __m128i  lut_roll = _mm_setr_epi8(
        0, 16, 19, 4, -65, -65, -71, -71, 0, 0, 0, 0, 0, 0, 0, 0);
    const __m128i  mask_2f = _mm_set1_epi8(0x2f);
    const __m128i  pack = _mm_setr_epi8(
        2, 1, 0, 6, 5, 4, 10, 9, 8, 14, 13, 12, -1, -1, -1, -1);

    i = 0;
    o = 0;

    while (i + 16 <= len && o + 16 <= room) {
        str = _mm_loadu_si128((const __m128i *) (src + i));

        hi_nib = _mm_and_si128(_mm_srli_epi32(str, 4), mask_2f);
        lo_nib = _mm_and_si128(str, mask_2f);
        hi = _mm_shuffle_epi8(lut_hi, hi_nib);
        lo = _mm_shuffle_epi8(lut_lo, lo_nib);

        if (_mm_movemask_epi8(_mm_cmpgt_epi8(_mm_and_si128(lo, hi),
                                             _mm_setzero_si128()))
            != 0)
        {
            break;
        }

        eq_2f = _mm_cmpeq_epi8(str, mask_2f);
        roll = _mm_shuffle_epi8(lut_roll, _mm_add_epi8(eq_2f, hi_nib));
        str = _mm_add_epi8(str, roll);

        ab_bc = _mm_maddubs_epi16(str, _mm_set1_epi32(0x01400140));
        out = _mm_madd_epi16(ab_bc, _mm_set1_epi32(0x00011000));
        out = _mm_shuffle_epi8(out, pack);

        _mm_storeu_si128((__m128i *) (dst + o), out);

        i += 16;
        o += 12;
    }

    return i;
}


__attribute__((target("avx2")))
static size_t
unico_b64_avx2(unsigned char *dst, size_t room, const unsigned char *src,
    size_t len)
{
    size_t   i, o;
    __m256i  str, hi_nib, lo_nib, hi, lo, eq_2f, roll, ab_bc, out;
    __m256i  str2, hi_nib2, lo_nib2, bad;

    const __m256i  lut_lo = _mm256_setr_epi8(
        0x15, 0x11, 0x11, 0x11, 0x11, 0x11, 0x11, 0x11,
        0x11, 0x11, 0x13, 0x1a, 0x1b, 0x1b, 0x1b, 0x1a,
        0x15, 0x11, 0x11, 0x11, 0x11, 0x11, 0x11, 0x11,
        0x11, 0x11, 0x13, 0x1a, 0x1b, 0x1b, 0x1b, 0x1a);
    const __m256i  lut_hi = _mm256_setr_epi8(
        0x10, 0x10, 0x01, 0x02, 0x04, 0x08, 0x04, 0x08,
        0x10, 0x10, 0x10, 0x10, 0x10, 0x10, 0x10, 0x10,
        0x10, 0x10, 0x01, 0x02, 0x04, 0x08, 0x04, 0x08,
        0x10, 0x10, 0x10, 0x10, 0x10, 0x10, 0x10, 0x10);
    const __m256i  lut_roll = _mm256_setr_epi8(
        0, 16, 19, 4, -65, -65, -71, -71, 0, 0, 0, 0, 0, 0, 0, 0,
        0, 16, 19, 4, -65, -65, -71, -71, 0, 0, 0, 0, 0, 0, 0, 0);
    const __m256i  mask_2f = _mm256_set1_epi8(0x2f);
    const __m256i  pack = _mm256_setr_epi8(
        2, 1, 0, 6, 5, 4, 10, 9, 8, 14, 13, 12, -1, -1, -1, -1,
        2, 1, 0, 6, 5, 4, 10, 9, 8, 14, 13, 12, -1, -1, -1, -1);
    const __m256i  lanes = _mm256_setr_epi32(0, 1, 2, 4, 5, 6, 3, 7);

    i = 0;
    o = 0;

    /* two blocks a turn, one test for both: 64 characters, 48 bytes */

    while (i + 64 <= len && o + 56 <= room) {
        str = _mm256_loadu_si256((const __m256i *) (src + i));
        str2 = _mm256_loadu_si256((const __m256i *) (src + i + 32));

        hi_nib = _mm256_and_si256(_mm256_srli_epi32(str, 4), mask_2f);
        lo_nib = _mm256_and_si256(str, mask_2f);
        hi_nib2 = _mm256_and_si256(_mm256_srli_epi32(str2, 4), mask_2f);
        lo_nib2 = _mm256_and_si256(str2, mask_2f);

        bad = _mm256_or_si256(
                  _mm256_and_si256(_mm256_shuffle_epi8(lut_lo, lo_nib),
                                   _mm256_shuffle_epi8(lut_hi, hi_nib)),
                  _mm256_and_si256(_mm256_shuffle_epi8(lut_lo, lo_nib2),
                                   _mm256_shuffle_epi8(lut_hi, hi_nib2)));

        if (!_mm256_testz_si256(bad, bad)) {
            break;
        }

        eq_2f = _mm256_cmpeq_epi8(str, mask_2f);
        roll = _mm256_shuffle_epi8(lut_roll, _mm256_add_epi8(eq_2f, hi_nib));
        str = _mm256_add_epi8(str, roll);

        eq_2f = _mm256_cmpeq_epi8(str2, mask_2f);
        roll = _mm256_shuffle_epi8(lut_roll, _mm256_add_epi8(eq_2f, hi_nib2));
        str2 = _mm256_add_epi8(str2, roll);

        ab_bc = _mm256_maddubs_epi16(str, _mm256_set1_epi32(0x01400140));
        out = _mm256_madd_epi16(ab_bc, _mm256_set1_epi32(0x00011000));
        out = _mm256_shuffle_epi8(out, pack);
        out = _mm256_permutevar8x32_epi32(out, lanes);

        _mm256_storeu_si256((__m256i *) (dst + o), out);

        ab_bc = _mm256_maddubs_epi16(str2, _mm256_set1_epi32(0x01400140));
        out = _mm256_madd_epi16(ab_bc, _mm256_set1_epi32(0x00011000));
        out = _mm256_shuffle_epi8(out, pack);
        out = _mm256_permutevar8x32_epi32(out, lanes);

        _mm256_storeu_si256((__m256i *) (dst + o + 24), out);

        i += 64;
        o += 48;
    }

    while (i + 32 <= len && o + 32 <= room) {
        str = _mm256_loadu_si256((const __m256i *) (src + i));

        hi_nib = _mm256_and_si256(_mm256_srli_epi32(str, 4), mask_2f);
        lo_nib = _mm256_and_si256(str, mask_2f);
        hi = _mm256_shuffle_epi8(lut_hi, hi_nib);
        lo = _mm256_shuffle_epi8(lut_lo, lo_nib);

        if (!_mm256_testz_si256(lo, hi)) {
            break;
        }

        eq_2f = _mm256_cmpeq_epi8(str, mask_2f);
        roll = _mm256_shuffle_epi8(lut_roll, _mm256_add_epi8(eq_2f, hi_nib));
        str = _mm256_add_epi8(str, roll);

        ab_bc = _mm256_maddubs_epi16(str, _mm256_set1_epi32(0x01400140));
        out = _mm256_madd_epi16(ab_bc, _mm256_set1_epi32(0x00011000));
        out = _mm256_shuffle_epi8(out, pack);
        out = _mm256_permutevar8x32_epi32(out, lanes);

        _mm256_storeu_si256((__m256i *) (dst + o), out);

        i += 32;
        o += 24;
    }

    /* a last 16-character block, if there is one */

    return i + unico_b64_ssse3(dst + o, room - o, src + i, len - i);
}

#endif


unico_base64_impl_e
unico_base64_impl(void)
{
#if (UNICO_B64_X86)

    __builtin_cpu_init();

    if (__builtin_cpu_supports("avx2")) {
        return UNICO_BASE64_AVX2;
    }

    if (__builtin_cpu_supports("ssse3")) {
        return UNICO_BASE64_SSSE3;
    }

#endif

    return UNICO_BASE64_SCALAR;
}


const char *
unico_base64_impl_name(unico_base64_impl_e impl)
{
    switch (impl) {

    case UNICO_BASE64_SSSE3:
        return "ssse3";

    case UNICO_BASE64_AVX2:
        return "avx2";

    case UNICO_BASE64_SCALAR:
        return "scalar";

    case UNICO_BASE64_AUTO:
    default:
        return unico_base64_impl_name(unico_base64_impl());
    }
}


/* the implementation asked for, or the best one there is, if less */

static unico_base64_impl_e
unico_b64_resolve(unico_base64_impl_e impl)
{
    unico_base64_impl_e  best;

    best = unico_base64_impl();

    if (impl == UNICO_BASE64_AUTO || impl > best) {
        return best;
    }

    return impl;
}


/* the vector blocks, if any; 0 characters taken otherwise */

static size_t
unico_b64_blocks(unico_base64_impl_e impl, unsigned char *dst, size_t room,
    const unsigned char *src, size_t len)
{
#if (UNICO_B64_X86)

    switch (impl) {

    case UNICO_BASE64_AVX2:
        return unico_b64_avx2(dst, room, src, len);

    case UNICO_BASE64_SSSE3:
        return unico_b64_ssse3(dst, room, src, len);

    default:
        break;
    }

#else

    (void) impl;
    (void) dst;
    (void) room;
    (void) src;
    (void) len;

#endif

    return 0;
}


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
 *
 * Before the scalar blocks, the vector blocks (SSSE3 or AVX2, where the
 * CPU has them) take what they can of the same run of sextets, with room
 * up to dst + unico_base64_decoded_max(len) for their wider stores.
 */

static size_t unico_b64_decode(unico_base64_impl_e impl, unsigned char *dst,
    const unsigned char *src, size_t len, unsigned raw,
    const unsigned char **stop);
static int unico_b64_slow(unsigned char *d, const unsigned char **pp,
    const unsigned char *end, unsigned raw);


size_t
unico_base64_decode(unsigned char *dst, const unsigned char *src, size_t len)
{
    const unsigned char  *stop;

    return unico_b64_decode(unico_base64_impl(), dst, src, len, 0, &stop);
}


size_t
unico_base64_decode_with(unico_base64_impl_e impl, unsigned char *dst,
    const unsigned char *src, size_t len)
{
    const unsigned char  *stop;

    return unico_b64_decode(unico_b64_resolve(impl), dst, src, len, 0,
                            &stop);
}


size_t
unico_base64_decode_json(unsigned char *dst, const unsigned char *src,
    size_t len, unsigned raw, const unsigned char **stop)
{
    return unico_b64_decode(unico_base64_impl(), dst, src, len, raw, stop);
}


size_t
unico_base64_decode_quanta(unsigned char *dst, size_t room,
    const unsigned char *src, size_t len)
{
    size_t    i, o;
    uint32_t  x, x0, x1, x2, x3;

    i = unico_b64_blocks(unico_base64_impl(), dst, room, src, len);
    o = i / 4 * 3;

    /* the scalar blocks: the last word store's 4th byte is o + 12 */

    while (i + 16 <= len && o + 13 <= room) {
        x0 = unico_b64_quantum(src + i);
        x1 = unico_b64_quantum(src + i + 4);
        x2 = unico_b64_quantum(src + i + 8);
        x3 = unico_b64_quantum(src + i + 12);

        if ((x0 | x1 | x2 | x3) & UNICO_B64_NOT_SEXTET) {
            break;
        }

        unico_b64_store4(dst + o, x0);
        unico_b64_store4(dst + o + 3, x1);
        unico_b64_store4(dst + o + 6, x2);
        unico_b64_store4(dst + o + 9, x3);

        i += 16;
        o += 12;
    }

    while (i + 4 <= len && o + 3 <= room) {
        x = unico_b64_quantum(src + i);

        if (x & UNICO_B64_NOT_SEXTET) {
            break;
        }

        unico_b64_store3(dst + o, x);
        i += 4;
        o += 3;
    }

    return i;
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
unico_b64_decode(unico_base64_impl_e impl, unsigned char *dst,
    const unsigned char *src, size_t len, unsigned raw,
    const unsigned char **stop)
{
    int                   rc;
    size_t                n;
    uint32_t              x, x0, x1, x2, x3;
    unsigned char        *d, *room;
    const unsigned char  *p, *end, *blocks_end, *quanta_end, *start;

    *stop = src;

    if (len == 0) {
        return 0;
    }

    d = dst;
    p = src;
    end = src + len;
    room = dst + unico_base64_decoded_max(len);

    /* p < blocks_end: more than 16 characters remain; quanta_end: 4 */

    blocks_end = (len > 16) ? end - 16 : src;
    quanta_end = (len > 4) ? end - 4 : src;

    for ( ;; ) {

        if (impl != UNICO_BASE64_SCALAR && p < blocks_end) {
            n = unico_b64_blocks(impl, d, (size_t) (room - d), p,
                                 (size_t) (end - p));
            p += n;
            d += n / 4 * 3;
        }

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

size_t
unico_base64_decoded_min(const unsigned char *s, size_t len)
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



void
unico_base64_count(const unsigned char *s, size_t len, size_t *chars,
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


int
unico_base64_sextet(unsigned char c)
{
    if (unico_b64_class(c) != 0) {
        return -1;
    }

    return (int) (unico_b64_dec[3][c] >> UNICO_B64_SHIFT(2) & 0x3f);
}


/* the sextet of c in the alphabets of flags, or -1 */

static int
unico_b64_strict_sextet(unsigned char c, unsigned flags)
{
    if (c >= 'A' && c <= 'Z') {
        return c - 'A';
    }

    if (c >= 'a' && c <= 'z') {
        return c - 'a' + 26;
    }

    if (c >= '0' && c <= '9') {
        return c - '0' + 52;
    }

    if (flags & UNICO_BASE64_STD) {
        if (c == '+') {
            return 62;
        }

        if (c == '/') {
            return 63;
        }
    }

    if (flags & UNICO_BASE64_URL) {
        if (c == '-') {
            return 62;
        }

        if (c == '_') {
            return 63;
        }
    }

    return -1;
}


long
unico_base64_decode_strict(unsigned char *dst, size_t max,
    const unsigned char *src, size_t len, unsigned flags)
{
    int       s;
    size_t    i, n, pad, out;
    uint32_t  v;

    pad = 0;

    if ((flags & UNICO_BASE64_PADDED) && len % 4 == 0) {
        while (pad < 2 && len > pad && src[len - pad - 1] == '=') {
            pad++;
        }
    }

    n = len - pad;

    if (n % 4 == 1 || (pad && n % 4 == 0)) {
        return UNICO_BASE64_MALFORMED;
    }

    out = n / 4 * 3 + (n % 4 ? n % 4 - 1 : 0);

    if (out > max) {
        return UNICO_BASE64_TOO_LONG;
    }

    v = 0;
    out = 0;

    for (i = 0; i < n; i++) {
        s = unico_b64_strict_sextet(src[i], flags);
        if (s < 0) {
            return UNICO_BASE64_MALFORMED;
        }

        v = v << 6 | (uint32_t) s;

        if (i % 4 == 3) {
            dst[out++] = (unsigned char) (v >> 16);
            dst[out++] = (unsigned char) (v >> 8);
            dst[out++] = (unsigned char) v;
            v = 0;
        }
    }

    switch (n % 4) {

    case 2:
        if (v & 0x0f) {
            return UNICO_BASE64_MALFORMED;
        }

        dst[out++] = (unsigned char) (v >> 4);
        break;

    case 3:
        if (v & 0x03) {
            return UNICO_BASE64_MALFORMED;
        }

        dst[out++] = (unsigned char) (v >> 10);
        dst[out++] = (unsigned char) (v >> 2);
        break;
    }

    return (long) out;
}


/* the encoders: the alphabet's 64 characters, then padding or not */

static size_t
unico_b64_encode(unsigned char *dst, const unsigned char *src, size_t len,
    const char *alphabet, unsigned pad)
{
    unsigned char  *d;

    d = dst;

    while (len >= 3) {
        *d++ = alphabet[src[0] >> 2];
        *d++ = alphabet[((src[0] & 0x03) << 4) | (src[1] >> 4)];
        *d++ = alphabet[((src[1] & 0x0f) << 2) | (src[2] >> 6)];
        *d++ = alphabet[src[2] & 0x3f];

        src += 3;
        len -= 3;
    }

    if (len) {
        *d++ = alphabet[src[0] >> 2];

        if (len == 1) {
            *d++ = alphabet[(src[0] & 0x03) << 4];

            if (pad) {
                *d++ = '=';
            }

        } else {
            *d++ = alphabet[((src[0] & 0x03) << 4) | (src[1] >> 4)];
            *d++ = alphabet[(src[1] & 0x0f) << 2];
        }

        if (pad) {
            *d++ = '=';
        }
    }

    return (size_t) (d - dst);
}


size_t
unico_base64_encode(unsigned char *dst, const unsigned char *src, size_t len)
{
    return unico_b64_encode(dst, src, len,
        "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/", 1);
}


size_t
unico_base64url_encode(unsigned char *dst, const unsigned char *src,
    size_t len)
{
    return unico_b64_encode(dst, src, len,
        "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_", 0);
}
