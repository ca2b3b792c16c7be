
/*
 * Copyright (C) ngx_unico_selfie_module authors
 * SPDX-License-Identifier: BSD-2-Clause
 *
 * The coalescing stage: concurrent requests for the same selfie (the same
 * key: processId and credentials) in a worker share one Unico call.  The
 * first is the leader and goes on to call; the others wait for its answer
 * and get a copy of it.
 */


#include <ngx_config.h>
#include <ngx_core.h>
#include <ngx_http.h>

#include "ngx_http_unico_selfie.h"




/* this worker's calls in flight, by key */

static ngx_rbtree_t       ngx_http_unico_selfie_flights;
static ngx_rbtree_node_t  ngx_http_unico_selfie_flights_sentinel;
static ngx_uint_t         ngx_http_unico_selfie_flights_init;


/*
 * NGX_OK: the request leads (it calls Unico); NGX_AGAIN: it waits for the
 * leader already calling; NGX_DONE: the leader's answer has come.
 */

ngx_int_t
ngx_http_unico_selfie_coalesce_stage(ngx_http_request_t *r,
    ngx_http_unico_selfie_ctx_t *ctx)
{
    uint32_t                      hash;
    ngx_str_t                     key;
    ngx_str_node_t               *sn;
    ngx_http_unico_selfie_ctx_t  *leader;

    if (ctx->answered) {
        return NGX_DONE;
    }

    if (ctx->following || ctx->leading) {
        return ctx->following ? NGX_AGAIN : NGX_OK;
    }

    /* the first time, or again after its leader ended early */

    ctx->rejoin = 0;

    if (!ngx_http_unico_selfie_flights_init) {
        ngx_rbtree_init(&ngx_http_unico_selfie_flights,
                        &ngx_http_unico_selfie_flights_sentinel,
                        ngx_str_rbtree_insert_value);
        ngx_http_unico_selfie_flights_init = 1;
    }

    key.data = ctx->key;
    key.len = UNICO_SELFIE_KEY_LEN;
    hash = ngx_crc32_short(key.data, key.len);

    sn = ngx_str_rbtree_lookup(&ngx_http_unico_selfie_flights, &key, hash);

    if (sn) {
        leader = (ngx_http_unico_selfie_ctx_t *)
                     ((u_char *) sn
                      - offsetof(ngx_http_unico_selfie_ctx_t, flight));

        ngx_queue_insert_tail(&leader->followers, &ctx->follower);
        ctx->following = 1;

        ctx->follow_ev.handler = ngx_http_unico_selfie_wake;
        ctx->follow_ev.data = r;
        ctx->follow_ev.log = r->connection->log;

        return NGX_AGAIN;
    }

    ctx->flight.node.key = hash;
    ctx->flight.str = key;
    ngx_rbtree_insert(&ngx_http_unico_selfie_flights, &ctx->flight.node);
    ngx_queue_init(&ctx->followers);
    ctx->leading = 1;

    return NGX_OK;
}


/*
 * The leader's answer: each follower gets the outcome, the status and a
 * copy of the image in its own pool, and is woken.  A leader that ended
 * early (its client left, or it failed within the gateway) leaves its
 * followers to go on alone.
 */

void
ngx_http_unico_selfie_coalesce_publish(ngx_http_unico_selfie_ctx_t *ctx)
{
    u_char                       *p;
    ngx_uint_t                    alone;
    ngx_queue_t                  *q;
    ngx_http_request_t           *fr;
    ngx_http_unico_selfie_ctx_t  *f;

    if (!ctx->leading) {
        return;
    }

    ctx->leading = 0;
    ngx_rbtree_delete(&ngx_http_unico_selfie_flights, &ctx->flight.node);

    alone = (ctx->stage != NGX_HTTP_UNICO_STAGE_RESPOND
             || ctx->outcome == NGX_HTTP_UNICO_INTERNAL
             || ctx->outcome == NGX_HTTP_UNICO_CLIENT_CLOSED);

    while (!ngx_queue_empty(&ctx->followers)) {
        q = ngx_queue_head(&ctx->followers);
        ngx_queue_remove(q);

        f = ngx_queue_data(q, ngx_http_unico_selfie_ctx_t, follower);
        fr = f->follow_ev.data;

        f->following = 0;

        ngx_post_event(&f->follow_ev, &ngx_posted_events);

        if (alone) {
            f->rejoin = 1;
            continue;
        }

        f->answered = 1;
        f->outcome = ctx->outcome;
        f->status = ctx->status;
        f->upstream_time = ctx->upstream_time;

        if (ctx->retry_after.len) {
            p = ngx_pnalloc(fr->pool, ctx->retry_after.len);
            if (p) {
                f->retry_after.len = ngx_cpymem(p, ctx->retry_after.data,
                                                ctx->retry_after.len) - p;
                f->retry_after.data = p;
            }
        }

        if (ctx->outcome == NGX_HTTP_UNICO_OK) {
            p = ngx_palloc(fr->pool, ctx->image.len);

            if (p == NULL) {
                f->outcome = NGX_HTTP_UNICO_INTERNAL;
                continue;
            }

            ngx_memcpy(p, ctx->image.data, ctx->image.len);

            f->image.data = p;
            f->image.len = ctx->image.len;
            f->image.type = ctx->image.type;
        }
    }
}


/* a request that ends early leaves its flight */

void
ngx_http_unico_selfie_coalesce_cleanup(ngx_http_unico_selfie_ctx_t *ctx)
{
    if (ctx->following) {
        ngx_queue_remove(&ctx->follower);
        ctx->following = 0;
    }

    ngx_http_unico_selfie_coalesce_publish(ctx);

    if (ctx->follow_ev.posted) {
        ngx_delete_posted_event(&ctx->follow_ev);
    }
}
