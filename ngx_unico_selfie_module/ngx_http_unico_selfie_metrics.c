
/*
 * Copyright (C) ngx_unico_selfie_module authors
 * SPDX-License-Identifier: BSD-2-Clause
 *
 * Counters in shared memory, shared by every worker, and the location that
 * serves them in Prometheus' text format ("unico_selfie_metrics;").
 *
 * The zone "unico_selfie_metrics" holds one block of ngx_atomic_t, each
 * updated with ngx_atomic_fetch_add(): no lock on the request path.  A
 * log-phase handler counts each request that reached an "unico_selfie"
 * location once, when it ends, with the status the client got (after any
 * error_page, as $status) and the reason ($unico_selfie_reason) the module
 * recorded.  A reload keeps the counts when the layout of the block is
 * unchanged.
 */


#include <ngx_config.h>
#include <ngx_core.h>
#include <ngx_http.h>

#include <nginx.h>

#include "ngx_http_unico_selfie.h"
#include "ngx_http_unico_selfie_version.h"


#define NGX_HTTP_UNICO_METRICS_ZONE_SIZE  (64 * 1024)
#define NGX_HTTP_UNICO_METRICS_STATUS_N   600
#define NGX_HTTP_UNICO_METRICS_BUCKETS_N  11


typedef struct {
    uint32_t          layout;

    /* by the status the client got, 0 for one outside 1 .. 599 */
    ngx_atomic_t      requests[NGX_HTTP_UNICO_METRICS_STATUS_N];

    /* by outcome; NGX_HTTP_UNICO_OK is not a failure and stays 0 */
    ngx_atomic_t      failures[NGX_HTTP_UNICO_OUTCOMES_N];

    /* not cumulative: the last one counts what is over every bound */
    ngx_atomic_t      upstream[NGX_HTTP_UNICO_METRICS_BUCKETS_N + 1];
    ngx_atomic_t      upstream_msec;

    ngx_atomic_t      bytes;
} ngx_http_unico_selfie_metrics_t;


typedef struct {
    ngx_msec_t        msec;
    ngx_str_t         le;
} ngx_http_unico_selfie_bucket_t;


static ngx_int_t ngx_http_unico_selfie_metrics_init_zone(
    ngx_shm_zone_t *shm_zone, void *data);
static uint32_t ngx_http_unico_selfie_metrics_layout(void);
static ngx_http_unico_selfie_metrics_t *ngx_http_unico_selfie_metrics_get(
    void);
static ngx_int_t ngx_http_unico_selfie_metrics_log(ngx_http_request_t *r);
static ngx_int_t ngx_http_unico_selfie_metrics_handler(ngx_http_request_t *r);


static ngx_str_t  ngx_http_unico_selfie_metrics_name =
    ngx_string("unico_selfie_metrics");


/* Prometheus' default buckets, in milliseconds */

static ngx_http_unico_selfie_bucket_t  ngx_http_unico_selfie_buckets[] = {
    { 5, ngx_string("0.005") },
    { 10, ngx_string("0.01") },
    { 25, ngx_string("0.025") },
    { 50, ngx_string("0.05") },
    { 100, ngx_string("0.1") },
    { 250, ngx_string("0.25") },
    { 500, ngx_string("0.5") },
    { 1000, ngx_string("1") },
    { 2500, ngx_string("2.5") },
    { 5000, ngx_string("5") },
    { 10000, ngx_string("10") }
};


/* unico_selfie_metrics; */

char *
ngx_http_unico_selfie_metrics(ngx_conf_t *cf, ngx_command_t *cmd, void *conf)
{
    ngx_http_unico_selfie_loc_conf_t *uslcf = conf;

    ngx_http_core_loc_conf_t  *clcf;

    if (uslcf->metrics) {
        return "is duplicate";
    }

    if (uslcf->process_id) {
        return "cannot be in the location of \"unico_selfie\": "
               "give the metrics a location of their own";
    }

    uslcf->metrics = 1;

    clcf = ngx_http_conf_get_module_loc_conf(cf, ngx_http_core_module);
    clcf->handler = ngx_http_unico_selfie_metrics_handler;

    return NGX_CONF_OK;
}


/* postconfiguration: the zone and the log-phase counter */

ngx_int_t
ngx_http_unico_selfie_metrics_init(ngx_conf_t *cf)
{
    ngx_shm_zone_t             *shm_zone;
    ngx_http_handler_pt        *h;
    ngx_http_core_main_conf_t  *cmcf;

    shm_zone = ngx_shared_memory_add(cf, &ngx_http_unico_selfie_metrics_name,
                                     NGX_HTTP_UNICO_METRICS_ZONE_SIZE,
                                     &ngx_http_unico_selfie_module);
    if (shm_zone == NULL) {
        return NGX_ERROR;
    }

    shm_zone->init = ngx_http_unico_selfie_metrics_init_zone;
    shm_zone->data = NULL;

    cmcf = ngx_http_conf_get_module_main_conf(cf, ngx_http_core_module);

    h = ngx_array_push(&cmcf->phases[NGX_HTTP_LOG_PHASE].handlers);
    if (h == NULL) {
        return NGX_ERROR;
    }

    *h = ngx_http_unico_selfie_metrics_log;

    return NGX_OK;
}


static ngx_int_t
ngx_http_unico_selfie_metrics_init_zone(ngx_shm_zone_t *shm_zone, void *data)
{
    ngx_http_unico_selfie_metrics_t  *om = data;

    uint32_t                          layout;
    ngx_slab_pool_t                  *shpool;
    ngx_http_unico_selfie_metrics_t  *m;

    layout = ngx_http_unico_selfie_metrics_layout();
    shpool = (ngx_slab_pool_t *) shm_zone->shm.addr;

    /* a reload: the old cycle's counters go on */

    if (om && om->layout == layout) {
        shm_zone->data = om;
        return NGX_OK;
    }

    if (shm_zone->shm.exists) {
        m = shpool->data;

        if (m && m->layout == layout) {
            shm_zone->data = m;
            return NGX_OK;
        }
    }

    /*
     * A new zone, or one whose layout changed with the module: new
     * counters.  An old block is left to the old workers still writing
     * to it.
     */

    m = ngx_slab_calloc(shpool, sizeof(ngx_http_unico_selfie_metrics_t));
    if (m == NULL) {
        ngx_log_error(NGX_LOG_EMERG, shm_zone->shm.log, 0,
                      "no room for the counters in zone \"%V\": "
                      "restart nginx", &shm_zone->shm.name);
        return NGX_ERROR;
    }

    m->layout = layout;

    shpool->data = m;
    shm_zone->data = m;

    return NGX_OK;
}


/* Changes whenever an index of the block would mean something else. */

static uint32_t
ngx_http_unico_selfie_metrics_layout(void)
{
    uint32_t          crc;
    ngx_uint_t        i;
    const ngx_str_t  *name;

    ngx_crc32_init(crc);

    i = sizeof(ngx_http_unico_selfie_metrics_t);
    ngx_crc32_update(&crc, (u_char *) &i, sizeof(ngx_uint_t));

    for (i = 0; i < NGX_HTTP_UNICO_OUTCOMES_N; i++) {
        name = ngx_http_unico_selfie_outcome_name(i);
        ngx_crc32_update(&crc, name->data, name->len);
        ngx_crc32_update(&crc, (u_char *) "", 1);
    }

    for (i = 0; i < NGX_HTTP_UNICO_METRICS_BUCKETS_N; i++) {
        ngx_crc32_update(&crc,
                         (u_char *) &ngx_http_unico_selfie_buckets[i].msec,
                         sizeof(ngx_msec_t));
    }

    ngx_crc32_final(crc);

    return crc;
}


/*
 * The counters of the cycle this process serves.  Found through the
 * cycle's list of zones rather than remembered at configuration time: a
 * reload that fails after its zones were set up must not leave a pointer
 * into them for workers spawned later from the old cycle.
 */

static ngx_http_unico_selfie_metrics_t *
ngx_http_unico_selfie_metrics_get(void)
{
    ngx_uint_t        i;
    ngx_shm_zone_t   *shm_zone;
    ngx_list_part_t  *part;

    static ngx_cycle_t                      *cycle;
    static ngx_http_unico_selfie_metrics_t  *metrics;

    if (cycle == (ngx_cycle_t *) ngx_cycle) {
        return metrics;
    }

    metrics = NULL;

    part = (ngx_list_part_t *) &ngx_cycle->shared_memory.part;
    shm_zone = part->elts;

    for (i = 0; /* void */ ; i++) {

        if (i >= part->nelts) {
            if (part->next == NULL) {
                break;
            }

            part = part->next;
            shm_zone = part->elts;
            i = 0;
        }

        if (shm_zone[i].tag == &ngx_http_unico_selfie_module
            && shm_zone[i].shm.name.len
               == ngx_http_unico_selfie_metrics_name.len
            && ngx_strncmp(shm_zone[i].shm.name.data,
                           ngx_http_unico_selfie_metrics_name.data,
                           ngx_http_unico_selfie_metrics_name.len)
               == 0)
        {
            metrics = shm_zone[i].data;
            break;
        }
    }

    cycle = (ngx_cycle_t *) ngx_cycle;

    return metrics;
}


static ngx_int_t
ngx_http_unico_selfie_metrics_log(ngx_http_request_t *r)
{
    off_t                             sent;
    ngx_uint_t                        i, status;
    ngx_http_unico_selfie_ctx_t      *ctx;
    ngx_http_unico_selfie_metrics_t  *m;

    /* with log_subrequest on, the calls to Unico are logged too: not here */

    if (r != r->main) {
        return NGX_OK;
    }

    ctx = ngx_http_unico_selfie_get_ctx(r);

    if (ctx == NULL) {
        return NGX_OK;
    }

    m = ngx_http_unico_selfie_metrics_get();

    if (m == NULL) {
        return NGX_OK;
    }

    /* the status of the access log's $status */

    if (r->err_status) {
        status = r->err_status;

    } else {
        status = r->headers_out.status;
    }

    if (status >= NGX_HTTP_UNICO_METRICS_STATUS_N) {
        status = 0;
    }

    (void) ngx_atomic_fetch_add(&m->requests[status], 1);

    if (ctx->outcome != NGX_HTTP_UNICO_OK
        && ctx->outcome < NGX_HTTP_UNICO_OUTCOMES_N)
    {
        (void) ngx_atomic_fetch_add(&m->failures[ctx->outcome], 1);
    }

    /* the request's call to Get Selfie, when one came to an end */

    if (ctx->fetch.subrequest && ctx->fetch.done) {

        for (i = 0; i < NGX_HTTP_UNICO_METRICS_BUCKETS_N; i++) {
            if (ctx->fetch.time <= ngx_http_unico_selfie_buckets[i].msec) {
                break;
            }
        }

        (void) ngx_atomic_fetch_add(&m->upstream[i], 1);
        (void) ngx_atomic_fetch_add(&m->upstream_msec,
                                    (ngx_atomic_int_t) ctx->fetch.time);
    }

    /* image bytes that left, as $body_bytes_sent counts them */

    if (ctx->outcome == NGX_HTTP_UNICO_OK) {
        sent = r->connection->sent - r->header_size;

        if (sent > 0) {
            (void) ngx_atomic_fetch_add(&m->bytes, (ngx_atomic_int_t) sent);
        }
    }

    return NGX_OK;
}


static ngx_int_t
ngx_http_unico_selfie_metrics_handler(ngx_http_request_t *r)
{
    size_t                            len;
    u_char                           *p;
    ngx_int_t                         rc;
    ngx_buf_t                        *b;
    ngx_uint_t                        i;
    ngx_chain_t                       out;
    ngx_cycle_t                      *cycle;
    ngx_atomic_uint_t                 n, total, refreshes_ok,
                                      refreshes_failed;
    const ngx_str_t                  *name;
    ngx_http_unico_selfie_metrics_t  *m;

    if (!(r->method & (NGX_HTTP_GET|NGX_HTTP_HEAD))) {
        return NGX_HTTP_NOT_ALLOWED;
    }

    rc = ngx_http_discard_request_body(r);

    if (rc != NGX_OK) {
        return rc;
    }

    m = ngx_http_unico_selfie_metrics_get();

    if (m == NULL) {
        ngx_log_error(NGX_LOG_ERR, r->connection->log, 0,
                      "unico selfie: no \"%V\" zone",
                      &ngx_http_unico_selfie_metrics_name);
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    /* an upper bound: every line at its longest */

    len = 2048
          + NGX_HTTP_UNICO_METRICS_STATUS_N
            * (sizeof("unico_selfie_requests_total{status=\"\"} " CRLF)
               + NGX_INT_T_LEN + NGX_ATOMIC_T_LEN);

    for (i = 0; i < NGX_HTTP_UNICO_OUTCOMES_N; i++) {
        len += sizeof("unico_selfie_failures_total{reason=\"\"} " CRLF)
               + ngx_http_unico_selfie_outcome_name(i)->len
               + NGX_ATOMIC_T_LEN;
    }

    len += (NGX_HTTP_UNICO_METRICS_BUCKETS_N + 1)
           * (sizeof("unico_selfie_upstream_seconds_bucket{le=\"+Inf\"} "
                     CRLF)
              + 8 + NGX_ATOMIC_T_LEN);

    len += 3 * (sizeof("unico_selfie_upstream_seconds_count ") + 1
                + 2 * NGX_ATOMIC_T_LEN);

    cycle = (ngx_cycle_t *) ngx_cycle;

    len += ngx_http_unico_selfie_cache_metrics_len(cycle);

    len += sizeof("# HELP unico_selfie_build_info The module's version and "
                  "the nginx it was built for.\n# TYPE unico_selfie_build_info "
                  "gauge\nunico_selfie_build_info{version=\"\",nginx=\"\"} 1\n")
           + sizeof(NGX_HTTP_UNICO_SELFIE_VERSION) + sizeof(NGINX_VERSION);

    b = ngx_create_temp_buf(r->pool, len);
    if (b == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    p = b->last;

    p = ngx_cpymem(p, "# HELP unico_selfie_requests_total Requests that "
                   "reached unico_selfie, by the status the client got."
                   "\n# TYPE unico_selfie_requests_total counter\n",
                   sizeof("# HELP unico_selfie_requests_total Requests that "
                          "reached unico_selfie, by the status the client "
                          "got.\n# TYPE unico_selfie_requests_total "
                          "counter\n") - 1);

    for (i = 0; i < NGX_HTTP_UNICO_METRICS_STATUS_N; i++) {
        n = m->requests[i];

        if (n) {
            p = ngx_sprintf(p, "unico_selfie_requests_total{status=\"%ui\"} "
                            "%uA\n", i, n);
        }
    }

    p = ngx_cpymem(p, "# HELP unico_selfie_failures_total Requests that "
                   "did not end with the image, by $unico_selfie_reason."
                   "\n# TYPE unico_selfie_failures_total counter\n",
                   sizeof("# HELP unico_selfie_failures_total Requests that "
                          "did not end with the image, by "
                          "$unico_selfie_reason.\n# TYPE "
                          "unico_selfie_failures_total counter\n") - 1);

    for (i = 0; i < NGX_HTTP_UNICO_OUTCOMES_N; i++) {
        if (i == NGX_HTTP_UNICO_OK) {
            continue;
        }

        name = ngx_http_unico_selfie_outcome_name(i);

        p = ngx_sprintf(p, "unico_selfie_failures_total{reason=\"%V\"} %uA\n",
                        name, (ngx_atomic_uint_t) m->failures[i]);
    }

    p = ngx_cpymem(p, "# HELP unico_selfie_upstream_seconds Time from the "
                   "call to Get Selfie to the end of its answer."
                   "\n# TYPE unico_selfie_upstream_seconds histogram\n",
                   sizeof("# HELP unico_selfie_upstream_seconds Time from "
                          "the call to Get Selfie to the end of its answer."
                          "\n# TYPE unico_selfie_upstream_seconds "
                          "histogram\n") - 1);

    total = 0;

    for (i = 0; i <= NGX_HTTP_UNICO_METRICS_BUCKETS_N; i++) {
        total += m->upstream[i];

        if (i == NGX_HTTP_UNICO_METRICS_BUCKETS_N) {
            p = ngx_sprintf(p, "unico_selfie_upstream_seconds_bucket"
                            "{le=\"+Inf\"} %uA\n", total);
            break;
        }

        p = ngx_sprintf(p, "unico_selfie_upstream_seconds_bucket{le=\"%V\"} "
                        "%uA\n", &ngx_http_unico_selfie_buckets[i].le, total);
    }

    n = m->upstream_msec;

    p = ngx_sprintf(p, "unico_selfie_upstream_seconds_sum %uA.%03uA\n"
                    "unico_selfie_upstream_seconds_count %uA\n",
                    n / 1000, n % 1000, total);

    ngx_http_unico_selfie_token_counts(cycle, &refreshes_ok,
                                       &refreshes_failed);

    p = ngx_sprintf(p, "# HELP unico_selfie_token_refreshes_total Service "
                    "account token requests, by result.\n"
                    "# TYPE unico_selfie_token_refreshes_total counter\n"
                    "unico_selfie_token_refreshes_total{result=\"ok\"} %uA\n"
                    "unico_selfie_token_refreshes_total{result=\"failed\"} "
                    "%uA\n",
                    refreshes_ok, refreshes_failed);

    p = ngx_sprintf(p, "# HELP unico_selfie_bytes_served_total Image bytes "
                    "sent to clients.\n"
                    "# TYPE unico_selfie_bytes_served_total counter\n"
                    "unico_selfie_bytes_served_total %uA\n",
                    (ngx_atomic_uint_t) m->bytes);

    p = ngx_http_unico_selfie_cache_metrics(cycle, p);

    p = ngx_sprintf(p, "# HELP unico_selfie_build_info The module's version "
                    "and the nginx it was built for.\n"
                    "# TYPE unico_selfie_build_info gauge\n"
                    "unico_selfie_build_info{version=\"%s\",nginx=\"%s\"} 1\n",
                    NGX_HTTP_UNICO_SELFIE_VERSION, NGINX_VERSION);

    b->last = p;
    b->last_buf = (r == r->main) ? 1 : 0;
    b->last_in_chain = 1;

    r->headers_out.status = NGX_HTTP_OK;
    r->headers_out.content_length_n = b->last - b->pos;

    ngx_str_set(&r->headers_out.content_type,
                "text/plain; version=0.0.4; charset=utf-8");
    r->headers_out.content_type_len = r->headers_out.content_type.len;
    r->headers_out.content_type_lowcase = NULL;

    rc = ngx_http_send_header(r);

    if (rc == NGX_ERROR || rc > NGX_OK || r->header_only) {
        return rc;
    }

    out.buf = b;
    out.next = NULL;

    return ngx_http_output_filter(r, &out);
}
