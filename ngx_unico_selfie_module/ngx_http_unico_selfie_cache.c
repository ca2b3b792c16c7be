
/*
 * Copyright (C) ngx_unico_selfie_module authors
 * SPDX-License-Identifier: BSD-2-Clause
 *
 * Protecting the Unico tenant and the latency of the page:
 *
 *   coalescing  concurrent requests for the same processId in a worker
 *               share one Unico call: the first is the leader, the others
 *               wait for its answer and get a copy of it;
 *   cache       optional: decoded selfies in a shared-memory zone, with a
 *               TTL and a size bound, least recently used evicted first;
 *   budget      optional: a token bucket shared by all workers that bounds
 *               the calls to Unico; over it a request waits a bounded time
 *               or gets 503 with Retry-After, instead of the tenant 429.
 */


#include <ngx_config.h>
#include <ngx_core.h>
#include <ngx_http.h>

#include "ngx_http_unico_selfie.h"


#define NGX_HTTP_UNICO_BUDGET_POLL  10          /* ms */


typedef struct {
    ngx_str_node_t             sn;            /* processId + location */
    ngx_queue_t                queue;         /* LRU */
    time_t                     expires;
    ngx_uint_t                 type;
    size_t                     len;
    u_char                    *data;
    u_char                     key[UNICO_SELFIE_KEY_LEN];
} ngx_http_unico_selfie_entry_t;


typedef struct {
    ngx_rbtree_t               rbtree;
    ngx_rbtree_node_t          sentinel;
    ngx_queue_t                queue;
} ngx_http_unico_selfie_cache_sh_t;


struct ngx_http_unico_selfie_cache_s {
    ngx_str_t                  name;
    time_t                     ttl;
    ngx_shm_zone_t            *zone;
    ngx_slab_pool_t           *shpool;
    ngx_http_unico_selfie_cache_sh_t  *sh;
};


typedef struct {
    ngx_atomic_t               lock;
    uint64_t                   tokens;        /* in 1/1000 of a call */
    ngx_msec_t                 last;
} ngx_http_unico_selfie_budget_sh_t;


struct ngx_http_unico_selfie_budget_s {
    ngx_uint_t                 rate;          /* calls per 1000 s */
    ngx_uint_t                 burst;         /* calls */
    ngx_msec_t                 wait;
    ngx_shm_zone_t            *zone;
    ngx_http_unico_selfie_budget_sh_t  *sh;
};


/* this worker's calls in flight, by processId and location */

static ngx_rbtree_t       ngx_http_unico_selfie_flights;
static ngx_rbtree_node_t  ngx_http_unico_selfie_flights_sentinel;
static ngx_uint_t         ngx_http_unico_selfie_flights_init;


static ngx_int_t ngx_http_unico_selfie_cache_init_zone(
    ngx_shm_zone_t *shm_zone, void *data);
static ngx_int_t ngx_http_unico_selfie_budget_init_zone(
    ngx_shm_zone_t *shm_zone, void *data);
static void ngx_http_unico_selfie_key(ngx_http_request_t *r,
    ngx_http_unico_selfie_ctx_t *ctx, ngx_str_t *key, uint32_t *hash);
static void ngx_http_unico_selfie_cache_evict(
    ngx_http_unico_selfie_cache_t *cache, ngx_http_unico_selfie_entry_t *e);
static void ngx_http_unico_selfie_wake(ngx_event_t *ev);
static void ngx_http_unico_selfie_budget_retry(ngx_event_t *ev);


/* unico_selfie_cache_zone <name>:<size> [ttl=<time>]; */

char *
ngx_http_unico_selfie_cache_zone(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf)
{
    u_char                         *p;
    ssize_t                         size;
    ngx_str_t                      *value, name, s;
    ngx_uint_t                      i;
    ngx_http_unico_selfie_cache_t  *cache;

    value = cf->args->elts;

    p = (u_char *) ngx_strchr(value[1].data, ':');

    if (p == NULL || p == value[1].data) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "invalid zone \"%V\", expected <name>:<size>",
                           &value[1]);
        return NGX_CONF_ERROR;
    }

    name.data = value[1].data;
    name.len = p - value[1].data;

    s.data = p + 1;
    s.len = value[1].data + value[1].len - s.data;

    size = ngx_parse_size(&s);

    if (size == NGX_ERROR || size < (ssize_t) (8 * ngx_pagesize)) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "invalid size of zone \"%V\"", &value[1]);
        return NGX_CONF_ERROR;
    }

    cache = ngx_pcalloc(cf->pool, sizeof(ngx_http_unico_selfie_cache_t));
    if (cache == NULL) {
        return NGX_CONF_ERROR;
    }

    cache->name = name;
    cache->ttl = 60;

    for (i = 2; i < cf->args->nelts; i++) {

        if (ngx_strncmp(value[i].data, "ttl=", 4) == 0) {
            s.data = value[i].data + 4;
            s.len = value[i].len - 4;

            cache->ttl = ngx_parse_time(&s, 1);
            if (cache->ttl == (time_t) NGX_ERROR || cache->ttl == 0) {
                ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                                   "invalid \"%V\"", &value[i]);
                return NGX_CONF_ERROR;
            }

            continue;
        }

        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "invalid parameter \"%V\"", &value[i]);
        return NGX_CONF_ERROR;
    }

    cache->zone = ngx_shared_memory_add(cf, &name, size,
                                        &ngx_http_unico_selfie_module);
    if (cache->zone == NULL) {
        return NGX_CONF_ERROR;
    }

    if (cache->zone->data) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "duplicate zone \"%V\"", &name);
        return NGX_CONF_ERROR;
    }

    cache->zone->init = ngx_http_unico_selfie_cache_init_zone;
    cache->zone->data = cache;

    return NGX_CONF_OK;
}


/* unico_selfie_cache <name> | off; */

char *
ngx_http_unico_selfie_cache(ngx_conf_t *cf, ngx_command_t *cmd, void *conf)
{
    ngx_http_unico_selfie_loc_conf_t *uslcf = conf;

    ngx_str_t  *value;

    if (uslcf->cache != NGX_CONF_UNSET_PTR) {
        return "is duplicate";
    }

    value = cf->args->elts;

    if (ngx_strcmp(value[1].data, "off") == 0) {
        uslcf->cache = NULL;
        return NGX_CONF_OK;
    }

    uslcf->cache_zone = ngx_shared_memory_add(cf, &value[1], 0,
                                              &ngx_http_unico_selfie_module);
    if (uslcf->cache_zone == NULL) {
        return NGX_CONF_ERROR;
    }

    /* resolved in the merge, once every zone is declared */
    uslcf->cache = NULL;

    return NGX_CONF_OK;
}


static ngx_int_t
ngx_http_unico_selfie_cache_init_zone(ngx_shm_zone_t *shm_zone, void *data)
{
    ngx_http_unico_selfie_cache_t  *ocache = data;

    size_t                          len;
    ngx_http_unico_selfie_cache_t  *cache;

    cache = shm_zone->data;

    if (ocache) {
        cache->sh = ocache->sh;
        cache->shpool = ocache->shpool;
        return NGX_OK;
    }

    cache->shpool = (ngx_slab_pool_t *) shm_zone->shm.addr;

    if (shm_zone->shm.exists) {
        cache->sh = cache->shpool->data;
        return NGX_OK;
    }

    cache->sh = ngx_slab_alloc(cache->shpool,
                               sizeof(ngx_http_unico_selfie_cache_sh_t));
    if (cache->sh == NULL) {
        return NGX_ERROR;
    }

    cache->shpool->data = cache->sh;

    ngx_rbtree_init(&cache->sh->rbtree, &cache->sh->sentinel,
                    ngx_str_rbtree_insert_value);
    ngx_queue_init(&cache->sh->queue);

    len = sizeof(" in unico_selfie_cache_zone \"\"") + shm_zone->shm.name.len;

    cache->shpool->log_ctx = ngx_slab_alloc(cache->shpool, len);
    if (cache->shpool->log_ctx == NULL) {
        return NGX_ERROR;
    }

    ngx_sprintf(cache->shpool->log_ctx, " in unico_selfie_cache_zone \"%V\"%Z",
                &shm_zone->shm.name);

    /* a full zone is normal: the oldest selfies make room */
    cache->shpool->log_nomem = 0;

    return NGX_OK;
}


/*
 * The key: the processId in lower case and the location's configuration,
 * as two locations may hold different credentials.
 */

static void
ngx_http_unico_selfie_key(ngx_http_request_t *r,
    ngx_http_unico_selfie_ctx_t *ctx, ngx_str_t *key, uint32_t *hash)
{
    void  *conf;

    conf = ngx_http_get_module_loc_conf(r, ngx_http_unico_selfie_module);

    ngx_strlow(ctx->key, ctx->process_id.data, UNICO_UUID_LEN);
    ngx_memcpy(ctx->key + UNICO_UUID_LEN, &conf, sizeof(void *));

    key->data = ctx->key;
    key->len = UNICO_SELFIE_KEY_LEN;

    *hash = ngx_crc32_short(key->data, key->len);
}


/* NGX_OK: a hit, copied into the request's pool; NGX_DECLINED: a miss */

ngx_int_t
ngx_http_unico_selfie_cache_get(ngx_http_request_t *r,
    ngx_http_unico_selfie_ctx_t *ctx, unico_image_t *image)
{
    u_char                            *p;
    uint32_t                           hash;
    ngx_str_t                          key;
    ngx_str_node_t                    *sn;
    ngx_http_unico_selfie_cache_t     *cache;
    ngx_http_unico_selfie_entry_t     *e;
    ngx_http_unico_selfie_loc_conf_t  *uslcf;

    uslcf = ngx_http_get_module_loc_conf(r, ngx_http_unico_selfie_module);
    cache = uslcf->cache;

    if (cache == NULL) {
        return NGX_DECLINED;
    }

    ngx_http_unico_selfie_key(r, ctx, &key, &hash);

    ngx_shmtx_lock(&cache->shpool->mutex);

    sn = ngx_str_rbtree_lookup(&cache->sh->rbtree, &key, hash);

    if (sn == NULL) {
        ngx_shmtx_unlock(&cache->shpool->mutex);
        return NGX_DECLINED;
    }

    e = (ngx_http_unico_selfie_entry_t *) sn;

    if (e->expires <= ngx_time()) {
        ngx_http_unico_selfie_cache_evict(cache, e);
        ngx_shmtx_unlock(&cache->shpool->mutex);
        return NGX_DECLINED;
    }

    ngx_queue_remove(&e->queue);
    ngx_queue_insert_head(&cache->sh->queue, &e->queue);

    /* a copy: the entry may be evicted while the response is sent */

    p = ngx_palloc(r->pool, e->len);
    if (p == NULL) {
        ngx_shmtx_unlock(&cache->shpool->mutex);
        return NGX_DECLINED;
    }

    ngx_memcpy(p, e->data, e->len);

    image->data = p;
    image->len = e->len;
    image->type = e->type;

    ngx_shmtx_unlock(&cache->shpool->mutex);

    return NGX_OK;
}


void
ngx_http_unico_selfie_cache_put(ngx_http_request_t *r,
    ngx_http_unico_selfie_ctx_t *ctx, unico_image_t *image)
{
    uint32_t                           hash;
    ngx_str_t                          key;
    ngx_uint_t                         tries;
    ngx_queue_t                       *q;
    ngx_str_node_t                    *sn;
    ngx_http_unico_selfie_cache_t     *cache;
    ngx_http_unico_selfie_entry_t     *e;
    ngx_http_unico_selfie_loc_conf_t  *uslcf;

    uslcf = ngx_http_get_module_loc_conf(r, ngx_http_unico_selfie_module);
    cache = uslcf->cache;

    if (cache == NULL) {
        return;
    }

    /* one selfie never empties the cache to make room for itself */

    if (image->len > cache->zone->shm.size / 2) {
        ngx_log_error(NGX_LOG_INFO, r->connection->log, 0,
                      "unico selfie: a %uz bytes selfie is too large for "
                      "cache zone \"%V\"", image->len, &cache->name);
        return;
    }

    ngx_http_unico_selfie_key(r, ctx, &key, &hash);

    ngx_shmtx_lock(&cache->shpool->mutex);

    sn = ngx_str_rbtree_lookup(&cache->sh->rbtree, &key, hash);
    if (sn) {
        ngx_http_unico_selfie_cache_evict(cache,
                                      (ngx_http_unico_selfie_entry_t *) sn);
    }

    e = NULL;

    /* make room from the least recently used end, a bounded number */

    for (tries = 0; tries < 64; tries++) {

        if (e == NULL) {
            e = ngx_slab_alloc_locked(cache->shpool,
                                      sizeof(ngx_http_unico_selfie_entry_t));
        }

        if (e) {
            e->data = ngx_slab_alloc_locked(cache->shpool, image->len);
            if (e->data) {
                break;
            }
        }

        if (ngx_queue_empty(&cache->sh->queue)) {
            break;
        }

        q = ngx_queue_last(&cache->sh->queue);
        ngx_http_unico_selfie_cache_evict(cache,
                      ngx_queue_data(q, ngx_http_unico_selfie_entry_t, queue));
    }

    if (e == NULL || e->data == NULL) {
        if (e) {
            ngx_slab_free_locked(cache->shpool, e);
        }

        ngx_shmtx_unlock(&cache->shpool->mutex);

        ngx_log_error(NGX_LOG_INFO, r->connection->log, 0,
                      "unico selfie: a %uz bytes selfie does not fit in "
                      "cache zone \"%V\"", image->len, &cache->name);
        return;
    }

    ngx_memcpy(e->data, image->data, image->len);
    ngx_memcpy(e->key, key.data, key.len);

    e->len = image->len;
    e->type = image->type;
    e->expires = ngx_time() + cache->ttl;
    e->sn.node.key = hash;
    e->sn.str.data = e->key;
    e->sn.str.len = key.len;

    ngx_rbtree_insert(&cache->sh->rbtree, &e->sn.node);
    ngx_queue_insert_head(&cache->sh->queue, &e->queue);

    ngx_shmtx_unlock(&cache->shpool->mutex);
}


static void
ngx_http_unico_selfie_cache_evict(ngx_http_unico_selfie_cache_t *cache,
    ngx_http_unico_selfie_entry_t *e)
{
    ngx_queue_remove(&e->queue);
    ngx_rbtree_delete(&cache->sh->rbtree, &e->sn.node);

    /* biometric data: wiped, not just freed */
    ngx_explicit_memzero(e->data, e->len);

    ngx_slab_free_locked(cache->shpool, e->data);
    ngx_slab_free_locked(cache->shpool, e);
}


char *
ngx_http_unico_selfie_cache_merge(ngx_conf_t *cf,
    ngx_http_unico_selfie_loc_conf_t *conf,
    ngx_http_unico_selfie_loc_conf_t *prev)
{
    if (conf->cache == NGX_CONF_UNSET_PTR) {
        conf->cache = prev->cache;
        conf->cache_zone = prev->cache_zone;
    }

    if (conf->cache == NGX_CONF_UNSET_PTR) {
        conf->cache = NULL;
    }

    if (conf->cache_zone == NULL) {
        return NGX_CONF_OK;
    }

    if (conf->cache_zone->data == NULL) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "unknown cache zone \"%V\": declare it with "
                           "\"unico_selfie_cache_zone\"",
                           &conf->cache_zone->shm.name);
        return NGX_CONF_ERROR;
    }

    conf->cache = conf->cache_zone->data;

    return NGX_CONF_OK;
}


/*
 * Coalescing: NGX_OK, the request leads (calls Unico); NGX_AGAIN, it
 * waits for the leader already calling.
 */

ngx_int_t
ngx_http_unico_selfie_coalesce_join(ngx_http_request_t *r,
    ngx_http_unico_selfie_ctx_t *ctx)
{
    uint32_t                      hash;
    ngx_str_t                     key;
    ngx_str_node_t               *sn;
    ngx_http_unico_selfie_ctx_t  *leader;

    if (!ngx_http_unico_selfie_flights_init) {
        ngx_rbtree_init(&ngx_http_unico_selfie_flights,
                        &ngx_http_unico_selfie_flights_sentinel,
                        ngx_str_rbtree_insert_value);
        ngx_http_unico_selfie_flights_init = 1;
    }

    ngx_http_unico_selfie_key(r, ctx, &key, &hash);

    sn = ngx_str_rbtree_lookup(&ngx_http_unico_selfie_flights, &key, hash);

    if (sn) {
        leader = (ngx_http_unico_selfie_ctx_t *)
                     ((u_char *) sn
                      - offsetof(ngx_http_unico_selfie_ctx_t, flight));

        ngx_queue_insert_tail(&leader->followers, &ctx->follower);
        ctx->following = 1;

        ctx->wait_ev.handler = ngx_http_unico_selfie_wake;
        ctx->wait_ev.data = r;
        ctx->wait_ev.log = r->connection->log;

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
 * copy of the image in its own pool, and is woken.  Also called from the
 * leader's pool cleanup with NGX_HTTP_UNICO_INTERNAL when it ends early.
 */

void
ngx_http_unico_selfie_coalesce_done(ngx_http_unico_selfie_ctx_t *ctx,
    ngx_http_unico_selfie_outcome_e outcome, unico_image_t *image)
{
    u_char                       *p;
    ngx_queue_t                  *q;
    ngx_http_request_t           *fr;
    ngx_http_unico_selfie_ctx_t  *f;

    if (!ctx->leading) {
        return;
    }

    ctx->leading = 0;
    ngx_rbtree_delete(&ngx_http_unico_selfie_flights, &ctx->flight.node);

    while (!ngx_queue_empty(&ctx->followers)) {
        q = ngx_queue_head(&ctx->followers);
        ngx_queue_remove(q);

        f = ngx_queue_data(q, ngx_http_unico_selfie_ctx_t, follower);
        fr = f->wait_ev.data;

        f->following = 0;

        if (image == NULL && outcome == NGX_HTTP_UNICO_INTERNAL) {
            /* the leader ended early: the follower goes on alone */
            f->rejoin = 1;
            ngx_post_event(&f->wait_ev, &ngx_posted_events);
            continue;
        }

        f->outcome = outcome;
        f->status = ctx->status;
        f->upstream_time = ctx->upstream_time;

        if (outcome == NGX_HTTP_UNICO_UNICO_429 && ctx->retry_after.len) {
            p = ngx_pnalloc(fr->pool, ctx->retry_after.len);
            if (p) {
                f->retry_after.len = ngx_cpymem(p, ctx->retry_after.data,
                                                ctx->retry_after.len) - p;
                f->retry_after.data = p;
            }
        }

        if (outcome == NGX_HTTP_UNICO_OK) {
            p = ngx_palloc(fr->pool, image->len);

            if (p == NULL) {
                f->outcome = NGX_HTTP_UNICO_INTERNAL;

            } else {
                ngx_memcpy(p, image->data, image->len);

                f->image.data = p;
                f->image.len = image->len;
                f->image.type = image->type;
            }
        }

        ngx_post_event(&f->wait_ev, &ngx_posted_events);
    }
}


/* a follower's leader has answered */

static void
ngx_http_unico_selfie_wake(ngx_event_t *ev)
{
    ngx_int_t                     rc;
    ngx_connection_t             *c;
    ngx_http_request_t           *r;
    ngx_http_unico_selfie_ctx_t  *ctx;

    r = ev->data;
    c = r->connection;

    ctx = ngx_http_get_module_ctx(r, ngx_http_unico_selfie_module);

    if (ctx != NULL) {
        if (ctx->rejoin) {
            ctx->rejoin = 0;
            rc = ngx_http_unico_selfie_proceed(r, ctx);

        } else {
            rc = ngx_http_unico_selfie_deliver(r, ctx);
        }

        if (rc != NGX_HTTP_UNICO_WAITING) {
            ngx_http_finalize_request(r, rc);
        }
    }

    ngx_http_run_posted_requests(c);
}


/* a request that ends early leaves its flight */

void
ngx_http_unico_selfie_coalesce_cleanup(ngx_http_unico_selfie_ctx_t *ctx)
{
    if (ctx->following) {
        ngx_queue_remove(&ctx->follower);
        ctx->following = 0;
    }

    if (ctx->leading) {
        ngx_http_unico_selfie_coalesce_done(ctx, NGX_HTTP_UNICO_INTERNAL,
                                            NULL);
    }

    if (ctx->wait_ev.posted) {
        ngx_delete_posted_event(&ctx->wait_ev);
    }
}


/* unico_selfie_budget <rate>r/s [burst=<n>] [wait=<time>]; */

char *
ngx_http_unico_selfie_budget(ngx_conf_t *cf, ngx_command_t *cmd, void *conf)
{
    ngx_http_unico_selfie_loc_conf_t *uslcf = conf;

    u_char                          *p;
    ngx_int_t                        n;
    ngx_str_t                       *value, name, s;
    ngx_uint_t                       i;
    ngx_http_unico_selfie_budget_t  *budget;

    if (uslcf->budget != NGX_CONF_UNSET_PTR) {
        return "is duplicate";
    }

    value = cf->args->elts;

    if (ngx_strcmp(value[1].data, "off") == 0) {
        uslcf->budget = NULL;
        return NGX_CONF_OK;
    }

    budget = ngx_pcalloc(cf->pool, sizeof(ngx_http_unico_selfie_budget_t));
    if (budget == NULL) {
        return NGX_CONF_ERROR;
    }

    p = value[1].data + value[1].len - 3;

    if (value[1].len < 4 || ngx_strncmp(p, "r/s", 3) != 0
        || (n = ngx_atoi(value[1].data, value[1].len - 3)) <= 0)
    {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "invalid rate \"%V\", expected <n>r/s",
                           &value[1]);
        return NGX_CONF_ERROR;
    }

    budget->rate = n * 1000;
    budget->burst = n;
    budget->wait = 1000;

    for (i = 2; i < cf->args->nelts; i++) {

        if (ngx_strncmp(value[i].data, "burst=", 6) == 0) {
            n = ngx_atoi(value[i].data + 6, value[i].len - 6);
            if (n <= 0) {
                goto invalid;
            }

            budget->burst = n;
            continue;
        }

        if (ngx_strncmp(value[i].data, "wait=", 5) == 0) {
            s.data = value[i].data + 5;
            s.len = value[i].len - 5;

            budget->wait = ngx_parse_time(&s, 0);
            if (budget->wait == (ngx_msec_t) NGX_ERROR) {
                goto invalid;
            }

            continue;
        }

        goto invalid;
    }

    ngx_str_set(&name, "unico_selfie_budget");

    budget->zone = ngx_shared_memory_add(cf, &name, 8 * ngx_pagesize,
                                         &ngx_http_unico_selfie_module);
    if (budget->zone == NULL) {
        return NGX_CONF_ERROR;
    }

    budget->zone->init = ngx_http_unico_selfie_budget_init_zone;
    budget->zone->data = budget;

    uslcf->budget = budget;

    return NGX_CONF_OK;

invalid:

    ngx_conf_log_error(NGX_LOG_EMERG, cf, 0, "invalid parameter \"%V\"",
                       &value[i]);
    return NGX_CONF_ERROR;
}


static ngx_int_t
ngx_http_unico_selfie_budget_init_zone(ngx_shm_zone_t *shm_zone, void *data)
{
    ngx_http_unico_selfie_budget_t  *obudget = data;

    ngx_slab_pool_t                 *shpool;
    ngx_http_unico_selfie_budget_t  *budget;

    budget = shm_zone->data;

    if (obudget) {
        budget->sh = obudget->sh;
        return NGX_OK;
    }

    shpool = (ngx_slab_pool_t *) shm_zone->shm.addr;

    if (shm_zone->shm.exists) {
        budget->sh = shpool->data;
        return NGX_OK;
    }

    budget->sh = ngx_slab_calloc(shpool,
                                 sizeof(ngx_http_unico_selfie_budget_sh_t));
    if (budget->sh == NULL) {
        return NGX_ERROR;
    }

    shpool->data = budget->sh;

    return NGX_OK;
}


/*
 * One call's worth of the budget: NGX_OK, take it; NGX_AGAIN, the request
 * waits (a timer calls ngx_http_unico_selfie_start() again); NGX_DECLINED,
 * over budget for longer than the wait: 503 with Retry-After.
 */

ngx_int_t
ngx_http_unico_selfie_budget_take(ngx_http_request_t *r,
    ngx_http_unico_selfie_ctx_t *ctx)
{
    uint64_t                           tokens, cap;
    ngx_msec_t                         now, elapsed;
    ngx_http_unico_selfie_budget_t    *budget;
    ngx_http_unico_selfie_budget_sh_t *sh;
    ngx_http_unico_selfie_loc_conf_t  *uslcf;

    uslcf = ngx_http_get_module_loc_conf(r, ngx_http_unico_selfie_module);
    budget = uslcf->budget;

    if (budget == NULL) {
        return NGX_OK;
    }

    sh = budget->sh;

    now = ngx_current_msec;
    cap = (uint64_t) budget->burst * 1000;

    /* a spin lock: the critical section is a few instructions */

    ngx_spinlock(&sh->lock, ngx_pid, 1024);

    if (sh->last == 0) {
        sh->tokens = cap;
        sh->last = now;
    }

    elapsed = now - sh->last;

    if ((ngx_msec_int_t) elapsed > 0) {
        tokens = sh->tokens + (uint64_t) elapsed * budget->rate / 1000;
        sh->tokens = ngx_min(tokens, cap);
        sh->last = now;
    }

    if (sh->tokens >= 1000) {
        sh->tokens -= 1000;
        ngx_unlock(&sh->lock);

        ctx->budget_waiting = 0;
        return NGX_OK;
    }

    ngx_unlock(&sh->lock);

    if (!ctx->budget_waiting) {
        ctx->budget_waiting = 1;
        ctx->wait_start = now;

    } else if (now - ctx->wait_start >= budget->wait) {
        ctx->budget_waiting = 0;
        ngx_str_set(&ctx->retry_after, "1");
        return NGX_DECLINED;
    }

    if (budget->wait == 0) {
        ctx->budget_waiting = 0;
        ngx_str_set(&ctx->retry_after, "1");
        return NGX_DECLINED;
    }

    ctx->wait_ev.handler = ngx_http_unico_selfie_budget_retry;
    ctx->wait_ev.data = r;
    ctx->wait_ev.log = r->connection->log;

    ngx_add_timer(&ctx->wait_ev, NGX_HTTP_UNICO_BUDGET_POLL);

    return NGX_AGAIN;
}


static void
ngx_http_unico_selfie_budget_retry(ngx_event_t *ev)
{
    ngx_int_t                     rc;
    ngx_connection_t             *c;
    ngx_http_request_t           *r;
    ngx_http_unico_selfie_ctx_t  *ctx;

    r = ev->data;
    c = r->connection;

    ctx = ngx_http_get_module_ctx(r, ngx_http_unico_selfie_module);

    if (ctx != NULL) {
        rc = ngx_http_unico_selfie_start(r, ctx);

        if (rc != NGX_HTTP_UNICO_WAITING) {
            ngx_http_finalize_request(r, rc);
        }
    }

    ngx_http_run_posted_requests(c);
}
