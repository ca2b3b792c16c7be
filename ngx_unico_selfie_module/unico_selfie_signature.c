
/*
 * Copyright (C) ngx_unico_selfie_module authors
 *
 * Signed, expiring selfie URLs: key file parsing, HMAC-SHA256 signing and
 * constant-time verification.  Plain C and OpenSSL, no nginx types, so
 * that t/unit/test_signature.c and t/fuzz/fuzz_signature.c can drive it
 * without a server.
 */


#include <string.h>

#include <openssl/core_names.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/params.h>

#include "unico_selfie_base64.h"
#include "unico_selfie_signature.h"


#define UNICO_SIG_HMAC_LEN  32



static int64_t unico_sig_expires(const unsigned char *p, size_t len);
static unico_sig_rc_e unico_sig_hmac(EVP_MAC_CTX *mac,
    const unsigned char *id, size_t id_len,
    const unsigned char *expires, size_t expires_len, unsigned char *out);


unico_keys_rc_e
unico_sig_keys_parse(unico_sig_keys_t *keys, const unsigned char *text,
    size_t len, size_t *line)
{
    long                  n;
    size_t                nline;
    EVP_MAC              *hmac;
    OSSL_PARAM            params[2];
    unico_keys_rc_e       rc;
    const unsigned char  *p, *end, *start, *last;
    unsigned char         key[UNICO_SIG_KEY_MAX + 3];

    memset(keys, 0, sizeof(unico_sig_keys_t));
    *line = 0;

    hmac = EVP_MAC_fetch(NULL, "HMAC", NULL);
    if (hmac == NULL) {
        return UNICO_KEYS_ERROR;
    }

    params[0] = OSSL_PARAM_construct_utf8_string(OSSL_MAC_PARAM_DIGEST,
                                                 (char *) "SHA256", 0);
    params[1] = OSSL_PARAM_construct_end();

    rc = UNICO_KEYS_OK;
    nline = 0;
    p = text;
    end = text + len;

    while (p < end) {
        nline++;

        start = p;

        while (p < end && *p != '\n') {
            p++;
        }

        last = p;

        if (p < end) {
            p++;                        /* the '\n' */
        }

        while (start < last
               && (*start == ' ' || *start == '\t' || *start == '\r'))
        {
            start++;
        }

        while (last > start
               && (last[-1] == ' ' || last[-1] == '\t' || last[-1] == '\r'))
        {
            last--;
        }

        if (start == last || *start == '#') {
            continue;
        }

        if (keys->n == UNICO_SIG_KEYS_MAX) {
            rc = UNICO_KEYS_TOO_MANY;
            break;
        }

        /* room for the longest key and one byte more: "too long" */

        n = unico_base64_decode_strict(key, sizeof(key), start,
                                       (size_t) (last - start),
                                       UNICO_BASE64_STD|UNICO_BASE64_URL
                                       |UNICO_BASE64_PADDED);

        if (n == UNICO_BASE64_MALFORMED) {
            rc = UNICO_KEYS_BAD_BASE64;
            break;
        }

        if (n == UNICO_BASE64_TOO_LONG || n > UNICO_SIG_KEY_MAX) {
            rc = UNICO_KEYS_TOO_LONG;
            break;
        }

        if (n < UNICO_SIG_KEY_MIN) {
            rc = UNICO_KEYS_TOO_SHORT;
            break;
        }

        keys->mac[keys->n] = EVP_MAC_CTX_new(hmac);

        if (keys->mac[keys->n] == NULL) {
            rc = UNICO_KEYS_ERROR;
            break;
        }

        keys->n++;

        if (!EVP_MAC_init(keys->mac[keys->n - 1], key, n, params)) {
            rc = UNICO_KEYS_ERROR;
            break;
        }
    }

    OPENSSL_cleanse(key, sizeof(key));
    EVP_MAC_free(hmac);

    if (rc == UNICO_KEYS_OK && keys->n == 0) {
        rc = UNICO_KEYS_NONE;
        nline = 0;
    }

    if (rc != UNICO_KEYS_OK) {
        unico_sig_keys_free(keys);
        *line = nline;
    }

    return rc;
}


void
unico_sig_keys_free(unico_sig_keys_t *keys)
{
    size_t  i;

    /* EVP_MAC_CTX_free() cleanses the key material it holds */

    for (i = 0; i < keys->n; i++) {
        EVP_MAC_CTX_free(keys->mac[i]);
        keys->mac[i] = NULL;
    }

    keys->n = 0;
}


const char *
unico_sig_keys_strerror(unico_keys_rc_e rc)
{
    switch (rc) {

    case UNICO_KEYS_OK:
        return "ok";

    case UNICO_KEYS_NONE:
        return "no key in the file";

    case UNICO_KEYS_TOO_MANY:
        return "more than 4 keys";

    case UNICO_KEYS_BAD_BASE64:
        return "the key is not base64 or base64url";

    case UNICO_KEYS_TOO_SHORT:
        return "the key is shorter than 32 bytes once decoded";

    case UNICO_KEYS_TOO_LONG:
        return "the key is longer than 128 bytes once decoded";

    default: /* UNICO_KEYS_ERROR */
        return "OpenSSL could not set up HMAC-SHA256";
    }
}


unico_sig_rc_e
unico_sig_verify(const unico_sig_keys_t *keys, const unsigned char *id,
    size_t id_len, const unsigned char *expires, size_t expires_len,
    const unsigned char *sig, size_t sig_len, int64_t now, int64_t skew,
    size_t *key)
{
    size_t          i;
    int64_t         exp;
    unico_sig_rc_e  rc;
    unsigned char   want[UNICO_SIG_HMAC_LEN], got[UNICO_SIG_HMAC_LEN];

    if (expires == NULL || sig == NULL) {
        return UNICO_SIG_MISSING;
    }

    exp = unico_sig_expires(expires, expires_len);

    if (exp < 0 || id_len > UNICO_SIG_ID_MAX) {
        return UNICO_SIG_MALFORMED;
    }

    /* exactly 43 characters of base64url, no padding, canonical */

    if (sig_len != UNICO_SIG_LEN
        || unico_base64url_decode(want, sizeof(want), sig, sig_len)
           != UNICO_SIG_HMAC_LEN)
    {
        return UNICO_SIG_MALFORMED;
    }

    for (i = 0; i < keys->n; i++) {
        rc = unico_sig_hmac(keys->mac[i], id, id_len, expires, expires_len,
                            got);
        if (rc != UNICO_SIG_OK) {
            return rc;
        }

        if (CRYPTO_memcmp(want, got, UNICO_SIG_HMAC_LEN) == 0) {
            break;
        }
    }

    if (i == keys->n) {
        return UNICO_SIG_MISMATCH;
    }

    if (key) {
        *key = i;
    }

    /* expires + skew < now, without overflowing either way */

    if (skew < 0) {
        skew = 0;
    }

    if (now > skew && exp < now - skew) {
        return UNICO_SIG_EXPIRED;
    }

    return UNICO_SIG_OK;
}


unico_sig_rc_e
unico_sig_sign(const unico_sig_keys_t *keys, size_t k,
    const unsigned char *id, size_t id_len,
    const unsigned char *expires, size_t expires_len, unsigned char *out)
{
    unico_sig_rc_e  rc;
    unsigned char   mac[UNICO_SIG_HMAC_LEN];

    if (k >= keys->n || id_len > UNICO_SIG_ID_MAX
        || unico_sig_expires(expires, expires_len) < 0)
    {
        return UNICO_SIG_MALFORMED;
    }

    rc = unico_sig_hmac(keys->mac[k], id, id_len, expires, expires_len, mac);
    if (rc != UNICO_SIG_OK) {
        return rc;
    }

    (void) unico_base64url_encode(out, mac, UNICO_SIG_HMAC_LEN);

    return UNICO_SIG_OK;
}


/*
 * HMAC-SHA256(key, lowercase(id) "\n" expires).  The context holds the key
 * from unico_sig_keys_parse(); EVP_MAC_init() without a key starts a new
 * message with it, so a verification allocates nothing.
 */

static unico_sig_rc_e
unico_sig_hmac(EVP_MAC_CTX *mac, const unsigned char *id, size_t id_len,
    const unsigned char *expires, size_t expires_len, unsigned char *out)
{
    size_t          i, len;
    unsigned char   c, msg[UNICO_SIG_ID_MAX + 1 + UNICO_SIG_EXPIRES_MAX];

    for (i = 0; i < id_len; i++) {
        c = id[i];
        msg[i] = (c >= 'A' && c <= 'Z') ? (unsigned char) (c | 0x20) : c;
    }

    msg[i++] = '\n';
    memcpy(&msg[i], expires, expires_len);
    len = i + expires_len;

    if (!EVP_MAC_init(mac, NULL, 0, NULL)
        || !EVP_MAC_update(mac, msg, len)
        || !EVP_MAC_final(mac, out, &len, UNICO_SIG_HMAC_LEN)
        || len != UNICO_SIG_HMAC_LEN)
    {
        return UNICO_SIG_ERROR;
    }

    return UNICO_SIG_OK;
}


/* 1 to UNICO_SIG_EXPIRES_MAX decimal digits; -1 otherwise. */

static int64_t
unico_sig_expires(const unsigned char *p, size_t len)
{
    size_t   i;
    int64_t  v;

    if (len == 0 || len > UNICO_SIG_EXPIRES_MAX) {
        return -1;
    }

    v = 0;

    /* 19 digits stay below INT64_MAX only up to 9223372036854775807 */

    for (i = 0; i < len; i++) {
        if (p[i] < '0' || p[i] > '9') {
            return -1;
        }

        if (v > (INT64_MAX - (p[i] - '0')) / 10) {
            return -1;
        }

        v = v * 10 + (p[i] - '0');
    }

    return v;
}
