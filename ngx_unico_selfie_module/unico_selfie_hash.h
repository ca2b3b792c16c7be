
/*
 * Copyright (C) ngx_unico_selfie_module authors
 *
 * The strong ETag of a served image: a 64-bit content hash of the decoded
 * bytes (libxxhash's XXH64), no nginx types.
 */


#ifndef _UNICO_SELFIE_HASH_H_INCLUDED_
#define _UNICO_SELFIE_HASH_H_INCLUDED_


#include <stddef.h>
#include <stdint.h>


/* '"', 16 lowercase hex digits, '"' */
#define UNICO_ETAG_LEN  18


/*
 * XXH64 (Yann Collet's xxHash, 64-bit variant) of p[0 .. len) with the
 * given seed, from libxxhash (link with -lxxhash); not cryptographic,
 * which an ETag does not need: it tells one response of a URL from
 * another.
 */
uint64_t unico_hash64(const unsigned char *p, size_t len, uint64_t seed);

/*
 * Writes the ETag of the image p[0 .. len) to out[0 .. UNICO_ETAG_LEN):
 * "\"" hex(unico_hash64(p, len, 0)) "\"", not NUL-terminated.
 */
void unico_etag(unsigned char *out, const unsigned char *p, size_t len);


#endif /* _UNICO_SELFIE_HASH_H_INCLUDED_ */
