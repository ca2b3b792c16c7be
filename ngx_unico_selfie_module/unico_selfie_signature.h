
/*
 * Copyright (C) ngx_unico_selfie_module authors
 * SPDX-License-Identifier: BSD-2-Clause
 *
 * Signed, expiring selfie URLs: the pure core, no nginx types.
 *
 *     /selfies/<processId>?expires=<unix time>&sig=<signature>
 *
 *     message   = lowercase(processId) "\n" expires
 *     signature = base64url(HMAC-SHA256(key, message)), unpadded: 43 bytes
 *
 * "expires" enters the message exactly as it is written in the URL.  Keys
 * come from a key file: one base64 or base64url secret a line, at least
 * UNICO_SIG_KEY_MIN bytes once decoded; '#' comments and blank lines are
 * ignored.  A signature made with any key of the file is accepted, so that
 * keys can be rotated without a flag day.
 */


#ifndef _UNICO_SELFIE_SIGNATURE_H_INCLUDED_
#define _UNICO_SELFIE_SIGNATURE_H_INCLUDED_


#include <stddef.h>
#include <stdint.h>

#include <openssl/types.h>


#define UNICO_SIG_KEYS_MAX     4       /* keys in one file */
#define UNICO_SIG_KEY_MIN      32      /* decoded bytes: SHA-256's output */
#define UNICO_SIG_KEY_MAX      128     /* decoded bytes */
#define UNICO_SIG_LEN          43      /* base64url of 32 bytes, unpadded */
#define UNICO_SIG_EXPIRES_MAX  19      /* decimal digits of "expires" */
#define UNICO_SIG_ID_MAX       64      /* bytes of a processId signed */


typedef enum {
    UNICO_SIG_OK = 0,
    UNICO_SIG_MISSING,          /* no "expires" or no "sig" */
    UNICO_SIG_MALFORMED,        /* "expires" or "sig" not in its format */
    UNICO_SIG_MISMATCH,         /* no key gives this signature */
    UNICO_SIG_EXPIRED,          /* genuine, but expires + skew < now */
    UNICO_SIG_ERROR             /* OpenSSL failed */
} unico_sig_rc_e;


typedef enum {
    UNICO_KEYS_OK = 0,
    UNICO_KEYS_NONE,            /* no key in the file */
    UNICO_KEYS_TOO_MANY,        /* more than UNICO_SIG_KEYS_MAX */
    UNICO_KEYS_BAD_BASE64,      /* a line is not base64 nor base64url */
    UNICO_KEYS_TOO_SHORT,       /* a key decodes to under UNICO_SIG_KEY_MIN */
    UNICO_KEYS_TOO_LONG,        /* a key decodes to over UNICO_SIG_KEY_MAX */
    UNICO_KEYS_ERROR            /* OpenSSL could not take a key */
} unico_keys_rc_e;


/*
 * The keys, each ready for HMAC-SHA256 (OpenSSL's EVP_MAC context with the
 * key set).  The raw key bytes are not kept.
 */
typedef struct unico_sig_keys_s {
    size_t         n;
    EVP_MAC_CTX   *mac[UNICO_SIG_KEYS_MAX];
} unico_sig_keys_t;


/*
 * Parses a key file held in text[0 .. len) into keys, which must be zeroed
 * memory or freed by unico_sig_keys_free() before.  On failure *line is the
 * 1-based line at fault (0 for a whole-file problem) and keys holds
 * nothing to free.  The text is only read: wipe it afterwards.
 */
unico_keys_rc_e unico_sig_keys_parse(unico_sig_keys_t *keys,
    const unsigned char *text, size_t len, size_t *line);

/* Releases what unico_sig_keys_parse() set up; keys can be parsed again. */
void unico_sig_keys_free(unico_sig_keys_t *keys);

/* A short, static, log-friendly description of a key file problem. */
const char *unico_sig_keys_strerror(unico_keys_rc_e rc);

/*
 * Verifies the signature sig[0 .. sig_len) of process id[0 .. id_len) with
 * expiry expires[0 .. expires_len), both as they appear in the URL; a NULL
 * expires or sig means the argument is absent.  Every key is tried, and
 * signatures are compared in constant time.  The signature is checked
 * before the expiry: UNICO_SIG_EXPIRED is only returned for a URL one of
 * the keys did sign.  "expires" is 1 to UNICO_SIG_EXPIRES_MAX decimal
 * digits; a URL is expired when expires + skew < now.  On UNICO_SIG_OK
 * *key (when not NULL) is the 0-based index of the key that matched.
 */
unico_sig_rc_e unico_sig_verify(const unico_sig_keys_t *keys,
    const unsigned char *id, size_t id_len,
    const unsigned char *expires, size_t expires_len,
    const unsigned char *sig, size_t sig_len,
    int64_t now, int64_t skew, size_t *key);

/*
 * Writes the signature of (id, expires) with key number k to
 * out[0 .. UNICO_SIG_LEN), not NUL-terminated.  For tests and tools: the
 * gateway only verifies.  Returns UNICO_SIG_OK, UNICO_SIG_MALFORMED for an
 * id or expires out of bounds, or UNICO_SIG_ERROR.
 */
unico_sig_rc_e unico_sig_sign(const unico_sig_keys_t *keys, size_t k,
    const unsigned char *id, size_t id_len,
    const unsigned char *expires, size_t expires_len,
    unsigned char *out);


#endif /* _UNICO_SELFIE_SIGNATURE_H_INCLUDED_ */
