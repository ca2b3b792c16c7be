
/*
 * Copyright (C) ngx_unico_selfie_module authors
 * SPDX-License-Identifier: BSD-2-Clause
 *
 * Signed, expiring URLs: the directives and the check of a request.  The
 * HMAC and the key file format live in unico_selfie_signature.c.
 *
 *     unico_selfie_signature_keys  <file> | off;
 *     unico_selfie_signature_skew  <time>;
 *
 * The key file is read once, at configuration load (as root, before the
 * workers drop privileges), and its secrets are kept only inside OpenSSL's
 * HMAC contexts.  Neither a key nor a signature is ever logged.
 */


#include <ngx_config.h>
#include <ngx_core.h>
#include <ngx_http.h>

#include "ngx_http_unico_selfie.h"
#include "unico_selfie_signature.h"


/* a key file holds at most four short lines and comments */
#define NGX_HTTP_UNICO_KEY_FILE_MAX  65536


static ngx_int_t ngx_http_unico_selfie_read_keys(ngx_conf_t *cf,
    ngx_str_t *name, unico_sig_keys_t *keys);
static void ngx_http_unico_selfie_keys_cleanup(void *data);


char *
ngx_http_unico_selfie_signature_keys(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf)
{
    ngx_http_unico_selfie_loc_conf_t *uslcf = conf;

    ngx_str_t           *value, name;
    unico_sig_keys_t    *keys;
    ngx_pool_cleanup_t  *cln;

    if (uslcf->signature_keys != NGX_CONF_UNSET_PTR) {
        return "is duplicate";
    }

    value = cf->args->elts;

    if (ngx_strcmp(value[1].data, "off") == 0) {
        uslcf->signature_keys = NULL;
        return NGX_CONF_OK;
    }

    name = value[1];

    if (ngx_conf_full_name(cf->cycle, &name, 1) != NGX_OK) {
        return NGX_CONF_ERROR;
    }

    keys = ngx_pcalloc(cf->pool, sizeof(unico_sig_keys_t));
    if (keys == NULL) {
        return NGX_CONF_ERROR;
    }

    cln = ngx_pool_cleanup_add(cf->pool, 0);
    if (cln == NULL) {
        return NGX_CONF_ERROR;
    }

    cln->handler = ngx_http_unico_selfie_keys_cleanup;
    cln->data = keys;

    if (ngx_http_unico_selfie_read_keys(cf, &name, keys) != NGX_OK) {
        return NGX_CONF_ERROR;
    }

    uslcf->signature_keys = keys;

    return NGX_CONF_OK;
}


static ngx_int_t
ngx_http_unico_selfie_read_keys(ngx_conf_t *cf, ngx_str_t *name,
    unico_sig_keys_t *keys)
{
    u_char           *buf;
    size_t            size, line;
    ssize_t           n;
    ngx_int_t         rc;
    ngx_file_t        file;
    ngx_file_info_t   fi;
    unico_keys_rc_e   krc;

    ngx_memzero(&file, sizeof(ngx_file_t));

    file.name = *name;
    file.log = cf->log;

    file.fd = ngx_open_file(name->data, NGX_FILE_RDONLY, NGX_FILE_OPEN, 0);

    if (file.fd == NGX_INVALID_FILE) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, ngx_errno,
                           ngx_open_file_n " \"%s\" failed", name->data);
        return NGX_ERROR;
    }

    rc = NGX_ERROR;
    buf = NULL;
    size = 0;

    if (ngx_fd_info(file.fd, &fi) == NGX_FILE_ERROR) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, ngx_errno,
                           ngx_fd_info_n " \"%s\" failed", name->data);
        goto done;
    }

    size = (size_t) ngx_file_size(&fi);

    if (!ngx_is_file(&fi) || size > NGX_HTTP_UNICO_KEY_FILE_MAX) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "signature key file \"%s\" is not a regular file "
                           "of at most %d bytes",
                           name->data, NGX_HTTP_UNICO_KEY_FILE_MAX);
        goto done;
    }

#if !(NGX_WIN32)
    if (ngx_file_access(&fi) & 0007) {
        ngx_conf_log_error(NGX_LOG_WARN, cf, 0,
                           "signature key file \"%s\" is accessible to "
                           "every user: make it 0600 or 0640",
                           name->data);
    }
#endif

    buf = ngx_pnalloc(cf->temp_pool, size + 1);
    if (buf == NULL) {
        goto done;
    }

    n = ngx_read_file(&file, buf, size, 0);

    if (n == NGX_ERROR) {
        goto done;
    }

    if ((size_t) n != size) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           ngx_read_file_n " \"%s\" returned only "
                           "%z bytes instead of %uz", name->data, n, size);
        goto done;
    }

    krc = unico_sig_keys_parse(keys, buf, size, &line);

    if (krc != UNICO_KEYS_OK) {

        /* the message names the line, never its content */

        if (line) {
            ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                               "signature key file \"%s\", line %uz: %s",
                               name->data, line,
                               unico_sig_keys_strerror(krc));

        } else {
            ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                               "signature key file \"%s\": %s",
                               name->data, unico_sig_keys_strerror(krc));
        }

        goto done;
    }

    rc = NGX_OK;

done:

    if (buf) {
        ngx_explicit_memzero(buf, size);
    }

    if (ngx_close_file(file.fd) == NGX_FILE_ERROR) {
        ngx_conf_log_error(NGX_LOG_ALERT, cf, ngx_errno,
                           ngx_close_file_n " \"%s\" failed", name->data);
    }

    return rc;
}


static void
ngx_http_unico_selfie_keys_cleanup(void *data)
{
    unico_sig_keys_t  *keys = data;

    unico_sig_keys_free(keys);
}


/*
 * The signature stage, after the processId is known to be a UUID and
 * before anything is asked of Unico.
 */

ngx_int_t
ngx_http_unico_selfie_signature_stage(ngx_http_request_t *r,
    ngx_http_unico_selfie_ctx_t *ctx)
{
    size_t                             key;
    ngx_str_t                          expires, sig;
    unico_sig_rc_e                     rc;
    const u_char                      *e, *s;
    ngx_http_unico_selfie_loc_conf_t  *uslcf;

    uslcf = ngx_http_get_module_loc_conf(r, ngx_http_unico_selfie_module);

    if (uslcf->signature_keys == NULL) {
        return NGX_OK;
    }

    /*
     * Query arguments as sent, not unescaped: base64url and digits need no
     * escaping.  An argument present but empty ("sig=") is malformed, an
     * absent one missing.
     */

    e = NULL;
    s = NULL;

    if (ngx_http_arg(r, (u_char *) "expires", 7, &expires) == NGX_OK) {
        e = expires.data;

    } else {
        expires.len = 0;
    }

    if (ngx_http_arg(r, (u_char *) "sig", 3, &sig) == NGX_OK) {
        s = sig.data;

    } else {
        sig.len = 0;
    }

    rc = unico_sig_verify(uslcf->signature_keys, ctx->process_id.data,
                          ctx->process_id.len, e, expires.len, s, sig.len,
                          (int64_t) ngx_time(),
                          (int64_t) uslcf->signature_skew, &key);

    switch (rc) {

    case UNICO_SIG_OK:
        ngx_log_debug1(NGX_LOG_DEBUG_HTTP, r->connection->log, 0,
                       "unico selfie: signature verified with key #%uz",
                       key + 1);
        return NGX_OK;

    case UNICO_SIG_MISSING:
        ctx->outcome = NGX_HTTP_UNICO_NO_SIGNATURE;
        break;

    case UNICO_SIG_MALFORMED:
    case UNICO_SIG_MISMATCH:
        ctx->outcome = NGX_HTTP_UNICO_BAD_SIGNATURE;
        break;

    case UNICO_SIG_EXPIRED:
        ctx->outcome = NGX_HTTP_UNICO_SIGNATURE_EXPIRED;
        break;

    default: /* UNICO_SIG_ERROR */
        ctx->outcome = NGX_HTTP_UNICO_INTERNAL;
    }

    return NGX_DONE;
}
