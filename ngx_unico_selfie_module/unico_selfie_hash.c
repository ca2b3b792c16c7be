
/*
 * Copyright (C) ngx_unico_selfie_module authors
 *
 * The ETag of a served image: XXH64 from Debian's libxxhash (package
 * libxxhash-dev), seed 0.
 *
 * Why this hash: the ETag must change whenever the bytes change (a strong
 * validator), and it is computed for every image served.  XXH64 runs at
 * under one instruction a byte on x86-64 (four independent lanes of load,
 * multiply, add, rotate, multiply per 8 bytes); OpenSSL's SHA-256 takes 28
 * without the SHA extensions.  XXH64 has the avalanche of a well-studied
 * hash (it passes SMHasher).  A 64-bit value makes an accidental collision
 * between two versions of one selfie a non-event; nobody gains by forging
 * one, since a client only ever compares the ETags of its own URL.  The
 * library's values are the reference ones: t/unit/test_signature.c checks
 * them against vectors taken from it.
 */


#include <xxhash.h>

#include "unico_selfie_hash.h"


uint64_t
unico_hash64(const unsigned char *p, size_t len, uint64_t seed)
{
    return (uint64_t) XXH64(p, len, (XXH64_hash_t) seed);
}


void
unico_etag(unsigned char *out, const unsigned char *p, size_t len)
{
    int       i;
    uint64_t  h;

    static const char  hex[] = "0123456789abcdef";

    h = (uint64_t) XXH64(p, len, 0);

    out[0] = '"';

    for (i = 16; i >= 1; i--) {
        out[i] = hex[h & 0xf];
        h >>= 4;
    }

    out[17] = '"';
}
