
/*
 * Copyright (C) ngx_unico_selfie_module authors
 *
 * Unit tests of unico_selfie_base64.c, printing TAP: RFC 4648's vectors
 * for every encoder and decoder, and the vector decoders (SSSE3, AVX2)
 * against the scalar one on every length 0 .. 200 at every alignment, with
 * every byte that is not a sextet at every position.  A decoder that the
 * CPU lacks is skipped, and said so.
 */


#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "unico_selfie_base64.h"

#include "tap.h"


#define MAX_LEN  200
#define ALIGNS   32


static const unico_base64_impl_e  impls[] = {
    UNICO_BASE64_SCALAR, UNICO_BASE64_SSSE3, UNICO_BASE64_AVX2
};


static void
test_rfc(void)
{
    size_t          i, n;
    long            k;
    unsigned char   out[64];

    static const struct {
        const char  *data;
        const char  *std;
        const char  *url;
    } v[] = {
        { "", "", "" },
        { "f", "Zg==", "Zg" },
        { "fo", "Zm8=", "Zm8" },
        { "foo", "Zm9v", "Zm9v" },
        { "foob", "Zm9vYg==", "Zm9vYg" },
        { "fooba", "Zm9vYmE=", "Zm9vYmE" },
        { "foobar", "Zm9vYmFy", "Zm9vYmFy" },
        { "\xfb\xff\xbf", "+/+/", "-_-_" }
    };

    for (i = 0; i < sizeof(v) / sizeof(v[0]); i++) {
        n = unico_base64_encode(out, (const unsigned char *) v[i].data,
                                strlen(v[i].data));
        ok(n == strlen(v[i].std) && memcmp(out, v[i].std, n) == 0
           && n == unico_base64_encoded_len(strlen(v[i].data)),
           "encode \"%s\"", v[i].std);

        n = unico_base64url_encode(out, (const unsigned char *) v[i].data,
                                   strlen(v[i].data));
        ok(n == strlen(v[i].url) && memcmp(out, v[i].url, n) == 0
           && n == unico_base64url_encoded_len(strlen(v[i].data)),
           "base64url encode \"%s\"", v[i].url);

        n = unico_base64_decode(out, (const unsigned char *) v[i].std,
                                strlen(v[i].std));
        ok(n == strlen(v[i].data) && memcmp(out, v[i].data, n) == 0,
           "forgiving decode \"%s\"", v[i].std);

        k = unico_base64_decode_strict(out, sizeof(out),
                (const unsigned char *) v[i].std, strlen(v[i].std),
                UNICO_BASE64_STD|UNICO_BASE64_PADDED);
        ok(k == (long) strlen(v[i].data) && memcmp(out, v[i].data, k) == 0,
           "strict decode \"%s\"", v[i].std);

        k = unico_base64url_decode(out, sizeof(out),
                                   (const unsigned char *) v[i].url,
                                   strlen(v[i].url));
        ok(k == (long) strlen(v[i].data) && memcmp(out, v[i].data, k) == 0,
           "base64url decode \"%s\"", v[i].url);
    }

    ok(unico_base64url_decode(out, sizeof(out),
                              (const unsigned char *) "Zh", 2)
       == UNICO_BASE64_MALFORMED,
       "strict: non-zero left-over bits refused");
    ok(unico_base64url_decode(out, sizeof(out),
                              (const unsigned char *) "Zg==", 4)
       == UNICO_BASE64_MALFORMED,
       "base64url: padding refused");
    ok(unico_base64url_decode(out, sizeof(out),
                              (const unsigned char *) "+/+/", 4)
       == UNICO_BASE64_MALFORMED,
       "base64url: '+' and '/' refused");
    ok(unico_base64url_decode(out, 2, (const unsigned char *) "Zm9v", 4)
       == UNICO_BASE64_TOO_LONG,
       "strict: too long for dst");
    ok(unico_base64_decode_strict(out, sizeof(out),
            (const unsigned char *) "-/+_", 4,
            UNICO_BASE64_STD|UNICO_BASE64_URL) == 3,
       "strict: both alphabets, mixed");
}


/* scalar and each vector decoder, on src[0 .. len), three ways */

static int
same(const unsigned char *src, size_t len, size_t align, const char *what)
{
    size_t          i, want, n, max;
    unsigned char  *ref, *buf, *out;

    max = unico_base64_decoded_max(len);

    ref = xmalloc(max + 1);
    out = xmalloc(max + ALIGNS + 1);
    buf = xmalloc(len + ALIGNS + 8);

    want = unico_base64_decode_with(UNICO_BASE64_SCALAR, ref, src, len);

    for (i = 1; i < sizeof(impls) / sizeof(impls[0]); i++) {

        /* into another buffer, dst at the alignment */

        n = unico_base64_decode_with(impls[i], out + align, src, len);

        if (n != want || (n != (size_t) -1
                          && memcmp(out + align, ref, n) != 0))
        {
            diag("%s: %s, len %zu, align %zu: %ld, scalar %ld", what,
                 unico_base64_impl_name(impls[i]), len, align,
                 (long) n, (long) want);
            goto bad;
        }

        /* in place, at the alignment */

        memcpy(buf + align, src, len);
        n = unico_base64_decode_with(impls[i], buf + align, buf + align, len);

        if (n != want || (n != (size_t) -1
                          && memcmp(buf + align, ref, n) != 0))
        {
            diag("%s: %s in place, len %zu, align %zu", what,
                 unico_base64_impl_name(impls[i]), len, align);
            goto bad;
        }

        /* dst 7 bytes before src */

        memcpy(buf + 7, src, len);
        n = unico_base64_decode_with(impls[i], buf, buf + 7, len);

        if (n != want || (n != (size_t) -1 && memcmp(buf, ref, n) != 0)) {
            diag("%s: %s overlapping, len %zu", what,
                 unico_base64_impl_name(impls[i]), len);
            goto bad;
        }
    }

    free(ref);
    free(out);
    free(buf);

    return 1;

bad:

    free(ref);
    free(out);
    free(buf);

    return 0;
}


static void
test_vectors(void)
{
    int             good;
    size_t          len, i, n, align, pos, k;
    unsigned char   data[MAX_LEN], enc[MAX_LEN * 2 + 8], src[MAX_LEN + 8];
    unsigned char   out[MAX_LEN + 64];

    for (i = 1; i < sizeof(impls) / sizeof(impls[0]); i++) {
        if (unico_base64_impl() < impls[i]) {
            ok(1, "# skip %s: not on this CPU",
               unico_base64_impl_name(impls[i]));
        }
    }

    diag("best decoder here: %s",
         unico_base64_impl_name(UNICO_BASE64_AUTO));

    srand(20261202);

    for (i = 0; i < sizeof(data); i++) {
        data[i] = (unsigned char) rand();
    }

    /* valid base64 of every length, at every alignment of src and dst */

    good = 1;

    for (len = 0; len <= MAX_LEN && good; len++) {
        n = unico_base64_encode(enc, data, len * 3 / 4);

        for (align = 0; align < ALIGNS && good; align++) {
            memcpy(src + (align & 7), enc, len < n ? len : n);
            good = same(src + (align & 7), len < n ? len : n, align,
                        "valid");
        }

        /* and it decodes to the data */

        if (good) {
            k = unico_base64_decode(out, enc, n);
            good = (k == len * 3 / 4 && memcmp(out, data, k) == 0);
        }
    }

    ok(good, "vector decoders = scalar: lengths 0 .. %d, %d alignments",
       MAX_LEN, ALIGNS);

    /* every non-sextet byte at every position of 200 characters */

    n = unico_base64_encode(enc, data, 150);
    good = 1;

    for (pos = 0; pos < n && good; pos++) {
        for (k = 0; k < 256 && good; k++) {

            if (unico_base64_sextet((unsigned char) k) >= 0) {
                continue;
            }

            memcpy(src, enc, n);
            src[pos] = (unsigned char) k;
            good = same(src, n, pos % ALIGNS, "one bad byte");

            if (good && !unico_base64_blank(k) && k != '='
                && unico_base64_decode(out, src, n) != (size_t) -1)
            {
                diag("byte %zu at %zu accepted", k, pos);
                good = 0;
            }
        }
    }

    ok(good, "vector decoders = scalar: each non-sextet byte at each of "
       "%zu positions", n);

    /* line breaks every 76 characters and padding at every length */

    good = 1;

    for (len = 0; len <= MAX_LEN && good; len++) {
        size_t  j, m;

        n = unico_base64_encode(enc, data, len);

        for (j = 0, m = 0; j < n && m < sizeof(src) - 2; j++) {
            src[m++] = enc[j];

            if (j % 76 == 75) {
                src[m++] = '\r';
                src[m++] = '\n';
            }
        }

        good = same(src, m < MAX_LEN ? m : MAX_LEN, len % ALIGNS, "breaks");
    }

    ok(good, "vector decoders = scalar: CRLF every 76, padded, truncated");

    /* the bulk step: whole quanta of sextets only, nothing past room */

    n = unico_base64_encode(enc, data, 150);
    memcpy(src, enc, n);
    src[101] = '\n';

    memset(out, 0xaa, sizeof(out));
    k = unico_base64_decode_quanta(out, 60, src, n);
    ok(k == 80 && memcmp(out, data, 60) == 0 && out[60] == 0xaa,
       "decode_quanta: stops at the room, writes nothing past it");

    memset(out, 0xaa, sizeof(out));
    k = unico_base64_decode_quanta(out, sizeof(out), src, n);
    ok(k == 100 && memcmp(out, data, 75) == 0,
       "decode_quanta: stops at the quantum with a blank");
}


int
main(void)
{
    test_rfc();
    test_vectors();

    printf("1..%u\n", tests);

    return failed ? 1 : 0;
}
