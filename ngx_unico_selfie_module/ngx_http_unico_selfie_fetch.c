
/*
 * Copyright (C) ngx_unico_selfie_module authors
 *
 * Calls through internal locations, and the fetch stage.
 *
 * A call is a subrequest (the selfie's to unico_selfie_api, a token's to a
 * service account's token_api) whose output never reaches the client: the
 * header and body filters below sit above the postpone filter, recognise
 * the module's own subrequests, record the status and copy the body into
 * one buffer bounded by the call's maximum.  This replaces
 * NGX_HTTP_SUBREQUEST_IN_MEMORY, whose buffer is sized by
 * subrequest_output_buffer_size of another location.
 *
 * When the call ends, its owner's handler is called with the parent
 * request: the fetch stage wakes the request, the token stage stores the
 * token.  Nothing here knows either.
 */


#include <ngx_config.h>
#include <ngx_core.h>
#include <ngx_http.h>

#include "ngx_http_unico_selfie.h"


static void ngx_http_unico_selfie_fetched(ngx_http_request_t *r,
    ngx_http_unico_selfie_fetch_t *f, ngx_int_t rc);
static ngx_int_t ngx_http_unico_selfie_fetch_done(ngx_http_request_t *r,
    void *data, ngx_int_t rc);
static ngx_http_unico_selfie_fetch_t *ngx_http_unico_selfie_fetch_ctx(
    ngx_http_request_t *r);
static ngx_int_t ngx_http_unico_selfie_header_filter(ngx_http_request_t *r);
static ngx_int_t ngx_http_unico_selfie_body_filter(ngx_http_request_t *r,
    ngx_chain_t *in);
static ngx_int_t ngx_http_unico_selfie_collect(ngx_http_request_t *r,
    ngx_http_unico_selfie_fetch_t *f, ngx_buf_t *b);
static ngx_int_t ngx_http_unico_selfie_stream_start(ngx_http_request_t *r,
    ngx_http_unico_selfie_fetch_t *f, size_t len);
static void *ngx_http_unico_selfie_pool_alloc(void *pool, size_t size);


static ngx_http_output_header_filter_pt  ngx_http_next_header_filter;
static ngx_http_output_body_filter_pt    ngx_http_next_body_filter;


static ngx_str_t  ngx_http_unico_selfie_path =
    ngx_string("/client/v1/process/");
static ngx_str_t  ngx_http_unico_selfie_suffix = ngx_string("/selfie");


/*
 * The fetch stage: one call to Get Selfie.  NGX_AGAIN while it is in
 * flight, NGX_OK once it has ended (the decode stage reads its answer).
 */

ngx_int_t
ngx_http_unico_selfie_fetch_stage(ngx_http_request_t *r,
    ngx_http_unico_selfie_ctx_t *ctx)
{
    u_char                            *p;
    size_t                             b64;
    ngx_str_t                          uri;
    ngx_http_unico_selfie_fetch_t     *f;
    ngx_http_unico_selfie_loc_conf_t  *uslcf;

    f = &ctx->fetch;

    if (f->done) {
        return NGX_OK;
    }

    if (f->subrequest) {
        return NGX_AGAIN;
    }

    /* after a wait, the client may have gone unnoticed */

    if (ctx->waited && ngx_http_unico_selfie_client_gone(r)) {
        ctx->outcome = NGX_HTTP_UNICO_CLIENT_CLOSED;
        return NGX_DONE;
    }

    uslcf = ngx_http_get_module_loc_conf(r, ngx_http_unico_selfie_module);

    /* the processId is a validated UUID: nothing in it needs escaping */

    uri.len = uslcf->api.len + ngx_http_unico_selfie_path.len
              + ctx->process_id.len + ngx_http_unico_selfie_suffix.len;

    uri.data = ngx_pnalloc(r->pool, uri.len);
    if (uri.data == NULL) {
        ctx->outcome = NGX_HTTP_UNICO_INTERNAL;
        return NGX_DONE;
    }

    p = ngx_cpymem(uri.data, uslcf->api.data, uslcf->api.len);
    p = ngx_cpymem(p, ngx_http_unico_selfie_path.data,
                   ngx_http_unico_selfie_path.len);
    p = ngx_cpymem(p, ctx->process_id.data, ctx->process_id.len);
    ngx_memcpy(p, ngx_http_unico_selfie_suffix.data,
               ngx_http_unico_selfie_suffix.len);

    /*
     * The JSON envelope of the largest image accepted: its base64, plus
     * room for escapes (\/, \n line breaks) and the other fields.
     */

    b64 = (uslcf->max_size + 2) / 3 * 4;

    f->body_max = b64 + b64 / 8 + 4096;
    f->max_image = uslcf->max_size;
    f->authorization = ctx->authorization;
    f->handler = ngx_http_unico_selfie_fetched;
    f->data = ctx;

    if (ngx_http_unico_selfie_fetch(r, f, &uri, NGX_HTTP_SUBREQUEST_WAITED)
        != NGX_OK)
    {
        ctx->outcome = NGX_HTTP_UNICO_INTERNAL;
        return NGX_DONE;
    }

    return NGX_AGAIN;
}


/* the selfie's call has ended: the request goes on (or is terminated) */

static void
ngx_http_unico_selfie_fetched(ngx_http_request_t *r,
    ngx_http_unico_selfie_fetch_t *f, ngx_int_t rc)
{
    ngx_http_unico_selfie_ctx_t  *ctx = f->data;

    if (f->aborted) {
        /* the client left: nginx terminates the request, nothing to send */
        ctx->outcome = NGX_HTTP_UNICO_CLIENT_CLOSED;
        ngx_http_unico_selfie_outcome_log(r, ctx);
        return;
    }

    /* nginx posts the parent once the subrequest is finalized */

    ctx->waiting = 0;
    r->write_event_handler = ngx_http_core_run_phases;
}


/* Sends a call: its answer is collected into f, f->handler is told. */

ngx_int_t
ngx_http_unico_selfie_fetch(ngx_http_request_t *r,
    ngx_http_unico_selfie_fetch_t *f, ngx_str_t *uri, ngx_uint_t flags)
{
    ngx_http_request_t          *sr;
    ngx_http_post_subrequest_t  *ps;

    ps = ngx_palloc(r->pool, sizeof(ngx_http_post_subrequest_t));
    if (ps == NULL) {
        return NGX_ERROR;
    }

    ps->handler = ngx_http_unico_selfie_fetch_done;
    ps->data = f;

    if (ngx_http_subrequest(r, uri, NULL, &sr, ps, flags) != NGX_OK) {
        return NGX_ERROR;
    }

    f->subrequest = sr;
    f->start = ngx_current_msec;

    ngx_http_set_ctx(sr, f, ngx_http_unico_selfie_module);

    ngx_log_debug1(NGX_LOG_DEBUG_HTTP, r->connection->log, 0,
                   "unico selfie: subrequest \"%V\"", uri);

    /*
     * The proxy logs the request it sends, Authorization or the assertion
     * and all, at debug level: keep the connection's debug log quiet until
     * the answer's headers arrive or the subrequest ends.
     */

    ngx_http_unico_selfie_quiet(r, f);

    return NGX_OK;
}


/* Forgets a call, for another one (after a 401). */

void
ngx_http_unico_selfie_fetch_reset(ngx_http_request_t *r,
    ngx_http_unico_selfie_fetch_t *f)
{
    if (f->body) {
        ngx_pfree(r->pool, f->body);
    }

    ngx_memzero(f, sizeof(ngx_http_unico_selfie_fetch_t));
}


/*
 * The post_subrequest handler of every call.  It can be called twice for
 * one subrequest (on a connect failure or timeout: first with 502/504 and
 * no status, then after an error page of its own, never produced here as
 * the first call returns NGX_OK, but a proxy_intercept_errors location may
 * have one): the second call is ignored.
 */

static ngx_int_t
ngx_http_unico_selfie_fetch_done(ngx_http_request_t *r, void *data,
    ngx_int_t rc)
{
    ngx_http_unico_selfie_fetch_t *f = data;

    if (f->done) {
        return rc;
    }

    f->done = 1;
    f->time = ngx_current_msec - f->start;

    ngx_http_unico_selfie_unquiet(r, f);

    ngx_log_debug3(NGX_LOG_DEBUG_HTTP, r->connection->log, 0,
                   "unico selfie: subrequest done rc:%i status:%ui last:%d",
                   rc, f->status, f->last);

    if (rc == NGX_HTTP_GATEWAY_TIME_OUT) {
        f->timed_out = 1;
    }

    f->aborted = (rc == NGX_HTTP_REQUEST_TIME_OUT
                  || rc == NGX_HTTP_CLIENT_CLOSED_REQUEST
                  || r->connection->error);

    if (f->status == 0 && rc >= NGX_HTTP_SPECIAL_RESPONSE
        && f->outcome == NGX_HTTP_UNICO_OK && !f->aborted)
    {
        f->outcome = f->timed_out ? NGX_HTTP_UNICO_UPSTREAM_TIMEOUT
                                  : NGX_HTTP_UNICO_UPSTREAM_ERROR;
    }

    f->handler(r->parent, f, rc);

    if (f->aborted) {
        /* the client is gone: let nginx terminate the whole request */
        return rc;
    }

    /*
     * Everything else, an upstream NGX_ERROR included, is the parent's to
     * answer: finish the subrequest quietly, as OpenResty's
     * ngx.location.capture does, instead of terminating the main request
     * or rendering an error page nobody reads.
     */

    return NGX_OK;
}


/*
 * Whether the client has gone, for a request about to call Unico after a
 * wait during which its connection may have been closed unnoticed (the
 * token location ignores client aborts): as ngx_http_test_reading() checks
 * it, without finalizing anything.
 */

ngx_uint_t
ngx_http_unico_selfie_client_gone(ngx_http_request_t *r)
{
    int                n;
    char               buf[1];
    ngx_err_t          err;
    ngx_connection_t  *c;

    c = r->connection;

    if (c->error) {
        return 1;
    }

#if (NGX_HTTP_V2)
    if (r->stream) {
        return 0;
    }
#endif

#if (NGX_HTTP_V3)
    if (c->quic) {
        return 0;
    }
#endif

    if (c->read->eof) {
        return 1;
    }

    n = recv(c->fd, buf, 1, MSG_PEEK);

    if (n == 0) {
        c->read->eof = 1;
        c->error = 1;
        return 1;
    }

    if (n == -1) {
        err = ngx_socket_errno;

        if (err != NGX_EAGAIN && err != NGX_EINTR) {
            c->read->eof = 1;
            c->error = 1;
            return 1;
        }
    }

    return 0;
}


/*
 * nginx's debug log prints header and variable values: while a token is
 * being evaluated or sent, the connection's debug bits are masked.  The
 * selfie's call and a token's may overlap: the main request counts the
 * holders.
 */

void
ngx_http_unico_selfie_quiet(ngx_http_request_t *r,
    ngx_http_unico_selfie_fetch_t *f)
{
#if (NGX_DEBUG)
    ngx_log_t                    *log;
    ngx_http_unico_selfie_ctx_t  *mctx;

    mctx = ngx_http_get_module_ctx(r->main, ngx_http_unico_selfie_module);

    if (f->quiet || mctx == NULL) {
        return;
    }

    log = r->connection->log;
    f->quiet = 1;

    if (mctx->quiet_count++ > 0) {
        return;
    }

    ngx_log_debug0(NGX_LOG_DEBUG_HTTP, log, 0,
                   "unico selfie: debug log paused while the token is used");

    mctx->log_level = log->log_level;
    log->log_level &= ~NGX_LOG_DEBUG_ALL;
#endif
}


void
ngx_http_unico_selfie_unquiet(ngx_http_request_t *r,
    ngx_http_unico_selfie_fetch_t *f)
{
#if (NGX_DEBUG)
    ngx_http_unico_selfie_ctx_t  *mctx;

    mctx = ngx_http_get_module_ctx(r->main, ngx_http_unico_selfie_module);

    if (!f->quiet || mctx == NULL) {
        return;
    }

    f->quiet = 0;

    if (--mctx->quiet_count > 0) {
        return;
    }

    r->connection->log->log_level = mctx->log_level;

    ngx_log_debug0(NGX_LOG_DEBUG_HTTP, r->connection->log, 0,
                   "unico selfie: debug log resumed");
#endif
}


ngx_int_t
ngx_http_unico_selfie_filter_init(ngx_conf_t *cf)
{
    ngx_http_next_header_filter = ngx_http_top_header_filter;
    ngx_http_top_header_filter = ngx_http_unico_selfie_header_filter;

    ngx_http_next_body_filter = ngx_http_top_body_filter;
    ngx_http_top_body_filter = ngx_http_unico_selfie_body_filter;

    return NGX_OK;
}


/*
 * The call of one of the module's subrequests, NULL for any other request.
 * An internal redirect (an X-Accel-Redirect that reached nginx despite the
 * includes) clears r->ctx: the subrequest is still the module's, known by
 * its post_subrequest handler (as OpenResty finds its captures), and its
 * output must not reach the client.
 */

static ngx_http_unico_selfie_fetch_t *
ngx_http_unico_selfie_fetch_ctx(ngx_http_request_t *r)
{
    ngx_http_post_subrequest_t     *ps;
    ngx_http_unico_selfie_fetch_t  *f;

    if (r == r->main) {
        return NULL;
    }

    f = ngx_http_get_module_ctx(r, ngx_http_unico_selfie_module);

    if (f != NULL) {
        return (f->subrequest == r) ? f : NULL;
    }

    ps = r->post_subrequest;

    if (ps == NULL || ps->handler != ngx_http_unico_selfie_fetch_done) {
        return NULL;
    }

    f = ps->data;

    if (f->subrequest != r) {
        return NULL;
    }

    ngx_http_set_ctx(r, f, ngx_http_unico_selfie_module);

    if (f->outcome == NGX_HTTP_UNICO_OK) {
        f->outcome = NGX_HTTP_UNICO_REDIRECTED;
    }

    return f;
}


static ngx_int_t
ngx_http_unico_selfie_header_filter(ngx_http_request_t *r)
{
    off_t                           len;
    ngx_uint_t                      i;
    ngx_list_part_t                *part;
    ngx_table_elt_t                *h;
    ngx_http_unico_selfie_fetch_t  *f;

    f = ngx_http_unico_selfie_fetch_ctx(r);

    if (f == NULL) {
        return ngx_http_next_header_filter(r);
    }

    /* the module's own subrequest: nothing of it goes further */

    ngx_http_unico_selfie_unquiet(r, f);

    if (f->outcome == NGX_HTTP_UNICO_REDIRECTED) {
        return NGX_OK;
    }

    f->status = r->headers_out.status;

    /* file buffers are read into memory by the copy filter */

    r->filter_need_in_memory = 1;

    if (f->status == NGX_HTTP_TOO_MANY_REQUESTS) {
        part = &r->headers_out.headers.part;
        h = part->elts;

        for (i = 0; /* void */; i++) {

            if (i >= part->nelts) {
                if (part->next == NULL) {
                    break;
                }

                part = part->next;
                h = part->elts;
                i = 0;
            }

            if (h[i].hash == 0
                || h[i].key.len != sizeof("Retry-After") - 1
                || ngx_strncasecmp(h[i].key.data, (u_char *) "Retry-After",
                                   sizeof("Retry-After") - 1)
                   != 0)
            {
                continue;
            }

            /* delay-seconds or an HTTP-date: nothing else passes on */

            if (h[i].value.len > 0 && h[i].value.len <= 64
                && ngx_strlchr(h[i].value.data,
                               h[i].value.data + h[i].value.len, '\r') == NULL
                && ngx_strlchr(h[i].value.data,
                               h[i].value.data + h[i].value.len, '\n') == NULL)
            {
                f->retry_after = h[i].value;
            }

            break;
        }
    }

    /* a token request's error answer is read too: it names the error */

    if (f->status != NGX_HTTP_OK && !f->error_body) {
        return NGX_OK;
    }

    if (r->headers_out.content_encoding
        && r->headers_out.content_encoding->value.len
        && ngx_strncasecmp(r->headers_out.content_encoding->value.data,
                           (u_char *) "identity", 8) != 0)
    {
        f->outcome = NGX_HTTP_UNICO_ENCODED;
        return NGX_ERROR;
    }

    len = r->headers_out.content_length_n;

    if (len > (off_t) f->body_max) {
        f->outcome = NGX_HTTP_UNICO_RESPONSE_TOO_LARGE;
        return NGX_ERROR;
    }

    /* the selfie: decoded as it arrives, into a buffer of the image's size */

    if (len > 0 && f->max_image && f->status == NGX_HTTP_OK) {
        return ngx_http_unico_selfie_stream_start(r, f, (size_t) len);
    }

    /* with a Content-Length the body is collected without a reallocation */

    if (len > 0) {
        f->body = ngx_palloc(r->pool, (size_t) len);
        if (f->body == NULL) {
            f->outcome = NGX_HTTP_UNICO_INTERNAL;
            return NGX_ERROR;
        }

        f->body_size = (size_t) len;
    }

    return NGX_OK;
}


static ngx_int_t
ngx_http_unico_selfie_body_filter(ngx_http_request_t *r, ngx_chain_t *in)
{
    ngx_int_t                       rc;
    ngx_buf_t                      *b;
    ngx_chain_t                    *cl;
    ngx_http_unico_selfie_fetch_t  *f;

    f = ngx_http_unico_selfie_fetch_ctx(r);

    if (f == NULL) {
        return ngx_http_next_body_filter(r, in);
    }

    rc = NGX_OK;

    for (cl = in; cl; cl = cl->next) {
        b = cl->buf;

        if (rc == NGX_OK && !f->done && f->outcome == NGX_HTTP_UNICO_OK
            && (f->status == NGX_HTTP_OK || f->error_body))
        {
            rc = ngx_http_unico_selfie_collect(r, f, b);
        }

        /* consumed: the upstream may reuse the buffer */

        b->pos = b->last;

        if (b->in_file) {
            b->file_pos = b->file_last;
        }

        if (b->last_buf || b->last_in_chain) {
            f->last = 1;
        }
    }

    return rc;
}


static ngx_int_t
ngx_http_unico_selfie_stream_start(ngx_http_request_t *r,
    ngx_http_unico_selfie_fetch_t *f, size_t len)
{
    u_char  *out;
    size_t   cap;

    cap = unico_payload_stream_out_size(len, f->max_image);

    out = ngx_palloc(r->pool, ngx_max(cap, 1));
    if (out == NULL) {
        f->outcome = NGX_HTTP_UNICO_INTERNAL;
        return NGX_ERROR;
    }

    /* yajl's state and the stream's buffers come from the request's pool */

    unico_pool_alloc_init(&f->alloc, ngx_http_unico_selfie_pool_alloc,
                          r->pool);

    f->stream = unico_payload_stream_create(out, cap, f->max_image, len,
                                            &f->alloc.funcs);
    if (f->stream == NULL) {
        f->outcome = NGX_HTTP_UNICO_INTERNAL;
        return NGX_ERROR;
    }

    f->stream_rc = UNICO_PAYLOAD_OK;

    return NGX_OK;
}


static void *
ngx_http_unico_selfie_pool_alloc(void *pool, size_t size)
{
    return ngx_palloc(pool, size);
}


static ngx_int_t
ngx_http_unico_selfie_collect(ngx_http_request_t *r,
    ngx_http_unico_selfie_fetch_t *f, ngx_buf_t *b)
{
    u_char  *p;
    size_t   size, need;

    if (b->in_file && !ngx_buf_in_memory(b)) {
        f->outcome = NGX_HTTP_UNICO_FILE_BUFFER;
        return NGX_ERROR;
    }

    size = b->last - b->pos;

    if (size == 0) {
        return NGX_OK;
    }

    need = f->body_len + size;

    if (need > f->body_max) {
        f->outcome = NGX_HTTP_UNICO_RESPONSE_TOO_LARGE;
        return NGX_ERROR;
    }

    if (f->stream) {

        /* after the stream's first problem, the rest is only counted */

        if (f->stream_rc == UNICO_PAYLOAD_OK) {
            f->stream_rc = unico_payload_stream_feed(f->stream, b->pos, size);
        }

        f->body_len = need;

        return NGX_OK;
    }

    if (need > f->body_size) {

        /* no or a wrong Content-Length: grow geometrically, bounded */

        f->body_size = ngx_max(need, ngx_max(f->body_size * 2, 16384));
        f->body_size = ngx_min(f->body_size, f->body_max);

        p = ngx_palloc(r->pool, f->body_size);
        if (p == NULL) {
            f->outcome = NGX_HTTP_UNICO_INTERNAL;
            return NGX_ERROR;
        }

        if (f->body) {
            ngx_memcpy(p, f->body, f->body_len);
            ngx_pfree(r->pool, f->body);
        }

        f->body = p;
    }

    ngx_memcpy(f->body + f->body_len, b->pos, size);
    f->body_len = need;

    return NGX_OK;
}
