
/*
 * Copyright (C) ngx_unico_selfie_module authors
 * SPDX-License-Identifier: BSD-2-Clause
 *
 * The cache stage: optional, decoded selfies in a shared-memory zone, with
 * a TTL and a size bound, least recently used evicted first, expired ones
 * wiped within about a second whether asked for or not.
 *
 * The zone also coalesces across workers: the first request to miss a
 * selfie marks a flight for it in the zone; a request of another worker
 * that misses it meanwhile waits (polling the zone, without blocking its
 * worker) for the image to be stored, or for the failure the flight ended
 * with, instead of calling Unico too.  Within a worker, the coalescing
 * stage does the same without the zone.
 */


#include <ngx_config.h>
#include <ngx_core.h>
#include <ngx_http.h>

#include "ngx_http_unico_selfie.h"
#include "unico_selfie_hash.h"


#define NGX_HTTP_UNICO_CACHE_SWEEP  1000        /* ms */
#define NGX_HTTP_UNICO_FLIGHT_POLL  20          /* ms */
#define NGX_HTTP_UNICO_FLIGHT_MAX   60000       /* ms a flight is waited for */
#define NGX_HTTP_UNICO_FLIGHT_FAIL  1000        /* ms a failure is shared */
#define NGX_HTTP_UNICO_RETRY_AFTER  32


/*
 * A selfie in the zone.  Hits are sent from the zone itself, without a
 * copy: each response that sends it holds it (a holder, with its worker's
 * pid), and an entry that leaves the cache (expired, evicted, replaced)
 * while held is only unlinked, onto the zone's "gone" queue; the last
 * holder wipes and frees it.  A worker that dies while sending it never
 * lets go: the sweep drops the holders of dead workers.
 */

typedef struct {
    ngx_str_node_t             sn;            /* processId + credentials */
    ngx_queue_t                queue;         /* LRU; once gone, "gone" */
    ngx_queue_t                expiry;        /* soonest to expire first */
    time_t                     expires;
    ngx_uint_t                 type;
    size_t                     len;
    u_char                    *data;
    ngx_queue_t                holders;       /* responses sending it */
    unsigned                   gone:1;        /* unlinked, awaits holders */
    u_char                     etag[UNICO_ETAG_LEN];
    u_char                     key[UNICO_SELFIE_KEY_LEN];
} ngx_http_unico_selfie_entry_t;


typedef struct {
    ngx_queue_t                queue;         /* the entry's holders */
    ngx_pid_t                  pid;
} ngx_http_unico_selfie_holder_t;


/* a call to Unico in flight in some worker, or the failure it ended with */

typedef struct {
    ngx_str_node_t             sn;
    ngx_pid_t                  pid;           /* the worker that calls */
    ngx_msec_t                 expires;
    ngx_uint_t                 failed;        /* ended: outcome and status */
    ngx_uint_t                 outcome;
    ngx_uint_t                 status;
    size_t                     retry_after_len;
    u_char                     retry_after[NGX_HTTP_UNICO_RETRY_AFTER];
    u_char                     key[UNICO_SELFIE_KEY_LEN];
} ngx_http_unico_selfie_flight_t;


typedef struct {
    ngx_rbtree_t               rbtree;
    ngx_rbtree_node_t          sentinel;
    ngx_queue_t                queue;
    ngx_queue_t                expiry;
    ngx_queue_t                gone;          /* unlinked, still sent */

    ngx_rbtree_t               flights;
    ngx_rbtree_node_t          flights_sentinel;

    /* for the metrics page, under the zone's mutex */
    ngx_uint_t                 entries;
    size_t                     bytes;
    ngx_uint_t                 hits;
    ngx_uint_t                 misses;
    ngx_uint_t                 expired;
    ngx_uint_t                 evicted;
} ngx_http_unico_selfie_cache_sh_t;


struct ngx_http_unico_selfie_cache_s {
    ngx_str_t                  name;
    time_t                     ttl;
    ngx_shm_zone_t            *zone;
    ngx_slab_pool_t           *shpool;
    ngx_http_unico_selfie_cache_sh_t  *sh;
};


/* every second each worker wipes the selfies whose TTL has passed */

static ngx_event_t        ngx_http_unico_selfie_sweep_ev;


static ngx_uint_t ngx_http_unico_selfie_reserved_zone(ngx_str_t *name);
static ngx_int_t ngx_http_unico_selfie_cache_init_zone(
    ngx_shm_zone_t *shm_zone, void *data);
static void ngx_http_unico_selfie_cache_evict(
    ngx_http_unico_selfie_cache_t *cache, ngx_http_unico_selfie_entry_t *e);
static void ngx_http_unico_selfie_cache_free(
    ngx_http_unico_selfie_cache_t *cache, ngx_http_unico_selfie_entry_t *e);
static void ngx_http_unico_selfie_cache_purge(
    ngx_http_unico_selfie_cache_t *cache, time_t now);
static void ngx_http_unico_selfie_cache_reap(
    ngx_http_unico_selfie_cache_t *cache, ngx_log_t *log);
static ngx_http_unico_selfie_cache_t *ngx_http_unico_selfie_cache_next(
    ngx_cycle_t *cycle, ngx_list_part_t **part, ngx_uint_t *i);
static void ngx_http_unico_selfie_cache_sweep(ngx_event_t *ev);
static ngx_int_t ngx_http_unico_selfie_cache_flight(ngx_http_request_t *r,
    ngx_http_unico_selfie_ctx_t *ctx, ngx_http_unico_selfie_cache_t *cache,
    ngx_str_t *key, uint32_t hash);
static void ngx_http_unico_selfie_cache_flight_remove(
    ngx_http_unico_selfie_cache_t *cache, ngx_http_unico_selfie_flight_t *fl);


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

    if (ngx_http_unico_selfie_reserved_zone(&name)) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "zone name \"%V\" is reserved for the module's "
                           "own use: choose another name", &name);
        return NGX_CONF_ERROR;
    }

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


/* the module's own zones: a user's cache zone must not take their names */

static ngx_uint_t
ngx_http_unico_selfie_reserved_zone(ngx_str_t *name)
{
    ngx_str_t  *r;

    static ngx_str_t  reserved[] = {
        ngx_string("unico_selfie_tokens"),
        ngx_string("unico_selfie_metrics"),
        ngx_string("unico_selfie_budget"),
        ngx_null_string
    };

    for (r = reserved; r->len; r++) {
        if (name->len == r->len
            && ngx_strncmp(name->data, r->data, r->len) == 0)
        {
            return 1;
        }
    }

    return 0;
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

    if (ngx_http_unico_selfie_reserved_zone(&value[1])) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "\"%V\" is one of the module's own zones, "
                           "not a cache zone", &value[1]);
        return NGX_CONF_ERROR;
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

    ngx_memzero(cache->sh, sizeof(ngx_http_unico_selfie_cache_sh_t));

    ngx_rbtree_init(&cache->sh->rbtree, &cache->sh->sentinel,
                    ngx_str_rbtree_insert_value);
    ngx_queue_init(&cache->sh->queue);
    ngx_queue_init(&cache->sh->expiry);
    ngx_queue_init(&cache->sh->gone);
    ngx_rbtree_init(&cache->sh->flights, &cache->sh->flights_sentinel,
                    ngx_str_rbtree_insert_value);

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
 * The cache stage: NGX_DONE, a hit, sent from the zone, or the failure
 * another worker's call for it just ended with; NGX_AGAIN, another worker
 * is calling for it; NGX_OK, a miss (or no cache): the request goes on,
 * and its worker calls.
 */

ngx_int_t
ngx_http_unico_selfie_cache_stage(ngx_http_request_t *r,
    ngx_http_unico_selfie_ctx_t *ctx)
{
    u_char                            *p;
    ngx_int_t                          rc;
    uint32_t                           hash;
    ngx_str_t                          key;
    ngx_str_node_t                    *sn;
    ngx_http_unico_selfie_cache_t     *cache;
    ngx_http_unico_selfie_entry_t     *e;
    ngx_http_unico_selfie_holder_t    *h;
    ngx_http_unico_selfie_loc_conf_t  *uslcf;

    uslcf = ngx_http_get_module_loc_conf(r, ngx_http_unico_selfie_module);
    cache = uslcf->cache;

    if (cache == NULL) {
        return NGX_OK;
    }

    key.data = ctx->key;
    key.len = UNICO_SELFIE_KEY_LEN;
    hash = ngx_crc32_short(key.data, key.len);

    ngx_shmtx_lock(&cache->shpool->mutex);

    ngx_http_unico_selfie_cache_purge(cache, ngx_time());

    sn = ngx_str_rbtree_lookup(&cache->sh->rbtree, &key, hash);

    if (sn == NULL) {
        if (!ctx->cache_waiting) {
            cache->sh->misses++;
        }

        rc = ngx_http_unico_selfie_cache_flight(r, ctx, cache, &key, hash);

        ngx_shmtx_unlock(&cache->shpool->mutex);

        if (rc == NGX_AGAIN) {
            ctx->cache_ev.handler = ngx_http_unico_selfie_wake;
            ctx->cache_ev.data = r;
            ctx->cache_ev.log = r->connection->log;

            ngx_add_timer(&ctx->cache_ev, NGX_HTTP_UNICO_FLIGHT_POLL);
        }

        return rc;
    }

    ctx->cache_waiting = 0;

    e = (ngx_http_unico_selfie_entry_t *) sn;

    ngx_queue_remove(&e->queue);
    ngx_queue_insert_head(&cache->sh->queue, &e->queue);

    /* sent from the zone: the entry stays until the response is done */

    h = ngx_slab_alloc_locked(cache->shpool,
                              sizeof(ngx_http_unico_selfie_holder_t));

    if (h) {
        h->pid = ngx_pid;
        ngx_queue_insert_tail(&e->holders, &h->queue);

        ctx->image.data = e->data;
        ctx->hit_cache = cache;
        ctx->hit_entry = e;
        ctx->hit_holder = h;

    } else {
        /* a full zone: this response sends a copy */

        p = ngx_pnalloc(r->pool, e->len);
        if (p == NULL) {
            ngx_shmtx_unlock(&cache->shpool->mutex);
            ctx->outcome = NGX_HTTP_UNICO_INTERNAL;
            return NGX_DONE;
        }

        ngx_memcpy(p, e->data, e->len);
        ctx->image.data = p;
    }

    cache->sh->hits++;

    ctx->image.len = e->len;
    ctx->image.type = e->type;

    ngx_memcpy(ctx->etag, e->etag, UNICO_ETAG_LEN);
    ctx->etag_set = 1;

    ngx_shmtx_unlock(&cache->shpool->mutex);

    ctx->cached = 1;
    ctx->outcome = NGX_HTTP_UNICO_OK;

    return NGX_DONE;
}


/*
 * On a miss, the zone is locked: NGX_OK, this worker calls (a flight is
 * marked, or already its own); NGX_AGAIN, another worker's call is in
 * flight; NGX_DONE, that call just failed and its failure is the answer.
 */

static ngx_int_t
ngx_http_unico_selfie_cache_flight(ngx_http_request_t *r,
    ngx_http_unico_selfie_ctx_t *ctx, ngx_http_unico_selfie_cache_t *cache,
    ngx_str_t *key, uint32_t hash)
{
    u_char                          *p;
    ngx_msec_t                       now;
    ngx_str_node_t                  *sn;
    ngx_http_unico_selfie_flight_t  *fl;

    now = ngx_current_msec;

    sn = ngx_str_rbtree_lookup(&cache->sh->flights, key, hash);
    fl = (ngx_http_unico_selfie_flight_t *) sn;

    if (fl && !fl->failed && ngx_http_unico_selfie_worker_gone(fl->pid)) {

        /* its worker died during the call: this request calls instead */

        ngx_log_error(NGX_LOG_WARN, r->connection->log, 0,
                      "unico selfie: the call of worker %P for this "
                      "selfie was lost with that worker, calling again",
                      fl->pid);

        ngx_http_unico_selfie_cache_flight_remove(cache, fl);
        fl = NULL;

    } else if (fl
               && ((ngx_msec_int_t) (fl->expires - now) <= 0
                   || (fl->failed && !ctx->cache_waiting)))
    {
        /*
         * A call that outlived any wait, or one that failed: its failure
         * is for the requests that waited for it, never cached for those
         * that come after.
         */

        ngx_http_unico_selfie_cache_flight_remove(cache, fl);
        fl = NULL;
    }

    if (fl == NULL) {
        ctx->cache_waiting = 0;

        fl = ngx_slab_calloc_locked(cache->shpool,
                                    sizeof(ngx_http_unico_selfie_flight_t));
        if (fl == NULL) {
            /* no room: this worker calls without telling the others */
            return NGX_OK;
        }

        ngx_memcpy(fl->key, key->data, key->len);

        fl->sn.node.key = hash;
        fl->sn.str.data = fl->key;
        fl->sn.str.len = key->len;
        fl->pid = ngx_pid;
        fl->expires = now + NGX_HTTP_UNICO_FLIGHT_MAX;

        ngx_rbtree_insert(&cache->sh->flights, &fl->sn.node);

        ctx->flight_cache = cache;

        return NGX_OK;
    }

    if (fl->failed) {
        ctx->cache_waiting = 0;
        ctx->outcome = fl->outcome;
        ctx->status = fl->status;

        if (fl->retry_after_len) {
            p = ngx_pnalloc(r->pool, fl->retry_after_len);
            if (p) {
                ngx_memcpy(p, fl->retry_after, fl->retry_after_len);
                ctx->retry_after.data = p;
                ctx->retry_after.len = fl->retry_after_len;
            }
        }

        return NGX_DONE;
    }

    if (fl->pid == ngx_pid) {
        /* this worker's call: the coalescing stage joins it */
        ctx->cache_waiting = 0;
        return NGX_OK;
    }

    ctx->cache_waiting = 1;

    return NGX_AGAIN;
}


/*
 * The end of the flight this request marked: its image is in the zone now
 * (or could not be stored), or the failure it ended with is the answer of
 * the other workers' requests waiting for it, for a second.  A request
 * that ended within the gateway (its client left, an internal error) lets
 * them call themselves.
 */

void
ngx_http_unico_selfie_cache_flight_end(ngx_http_unico_selfie_ctx_t *ctx)
{
    uint32_t                         hash;
    ngx_str_t                        key;
    ngx_str_node_t                  *sn;
    ngx_http_unico_selfie_cache_t   *cache;
    ngx_http_unico_selfie_flight_t  *fl;

    cache = ctx->flight_cache;

    if (cache == NULL) {
        return;
    }

    ctx->flight_cache = NULL;

    key.data = ctx->key;
    key.len = UNICO_SELFIE_KEY_LEN;
    hash = ngx_crc32_short(key.data, key.len);

    ngx_shmtx_lock(&cache->shpool->mutex);

    sn = ngx_str_rbtree_lookup(&cache->sh->flights, &key, hash);
    fl = (ngx_http_unico_selfie_flight_t *) sn;

    if (fl == NULL || fl->pid != ngx_pid || fl->failed) {
        ngx_shmtx_unlock(&cache->shpool->mutex);
        return;
    }

    if (ctx->outcome == NGX_HTTP_UNICO_OK
        || ctx->outcome == NGX_HTTP_UNICO_CLIENT_CLOSED
        || ctx->outcome == NGX_HTTP_UNICO_INTERNAL)
    {
        ngx_http_unico_selfie_cache_flight_remove(cache, fl);
        ngx_shmtx_unlock(&cache->shpool->mutex);
        return;
    }

    fl->failed = 1;
    fl->outcome = ctx->outcome;
    fl->status = ctx->status;
    fl->expires = ngx_current_msec + NGX_HTTP_UNICO_FLIGHT_FAIL;
    fl->retry_after_len = ngx_min(ctx->retry_after.len,
                                  NGX_HTTP_UNICO_RETRY_AFTER);

    if (fl->retry_after_len) {
        ngx_memcpy(fl->retry_after, ctx->retry_after.data,
                   fl->retry_after_len);
    }

    ngx_shmtx_unlock(&cache->shpool->mutex);
}


static void
ngx_http_unico_selfie_cache_flight_remove(ngx_http_unico_selfie_cache_t *cache,
    ngx_http_unico_selfie_flight_t *fl)
{
    ngx_rbtree_delete(&cache->sh->flights, &fl->sn.node);
    ngx_slab_free_locked(cache->shpool, fl);
}


/* a request that ends early lets go of its wait and of its flight */

void
ngx_http_unico_selfie_cache_cleanup(ngx_http_unico_selfie_ctx_t *ctx)
{
    ngx_http_unico_selfie_cache_t   *cache;
    ngx_http_unico_selfie_entry_t   *e;
    ngx_http_unico_selfie_holder_t  *h;

    if (ctx->cache_ev.timer_set) {
        ngx_del_timer(&ctx->cache_ev);
    }

    /* a hit's response is done: it lets go of the entry */

    cache = ctx->hit_cache;
    e = ctx->hit_entry;
    h = ctx->hit_holder;

    if (h) {
        ctx->hit_holder = NULL;
        ctx->hit_entry = NULL;

        ngx_shmtx_lock(&cache->shpool->mutex);

        ngx_queue_remove(&h->queue);
        ngx_slab_free_locked(cache->shpool, h);

        if (e->gone && ngx_queue_empty(&e->holders)) {
            ngx_queue_remove(&e->queue);
            ngx_http_unico_selfie_cache_free(cache, e);
        }

        ngx_shmtx_unlock(&cache->shpool->mutex);
    }

    if (ctx->flight_cache) {
        ctx->outcome = NGX_HTTP_UNICO_INTERNAL;
        ngx_http_unico_selfie_cache_flight_end(ctx);
    }
}


/* a fetched image, for the requests after this one */

void
ngx_http_unico_selfie_cache_put(ngx_http_request_t *r,
    ngx_http_unico_selfie_ctx_t *ctx)
{
    uint32_t                           hash;
    ngx_str_t                          key;
    time_t                             now;
    ngx_uint_t                         tries;
    ngx_queue_t                       *q;
    ngx_str_node_t                    *sn;
    ngx_http_unico_selfie_cache_t     *cache;
    unico_image_t                     *image;
    ngx_http_unico_selfie_entry_t     *e, *prev;
    ngx_http_unico_selfie_loc_conf_t  *uslcf;

    uslcf = ngx_http_get_module_loc_conf(r, ngx_http_unico_selfie_module);
    cache = uslcf->cache;

    if (cache == NULL) {
        return;
    }

    image = &ctx->image;

    /* the ETag is made once, here, for this response and every hit */

    if (!ctx->etag_set) {
        unico_etag(ctx->etag, image->data, image->len);
        ctx->etag_set = 1;
    }

    /* one selfie never empties the cache to make room for itself */

    if (image->len > cache->zone->shm.size / 2) {
        ngx_log_error(NGX_LOG_INFO, r->connection->log, 0,
                      "unico selfie: a %uz bytes selfie is too large for "
                      "cache zone \"%V\"", image->len, &cache->name);
        return;
    }

    key.data = ctx->key;
    key.len = UNICO_SELFIE_KEY_LEN;
    hash = ngx_crc32_short(key.data, key.len);

    now = ngx_time();

    ngx_shmtx_lock(&cache->shpool->mutex);

    ngx_http_unico_selfie_cache_purge(cache, now);

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
        cache->sh->evicted++;
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
    ngx_memcpy(e->etag, ctx->etag, UNICO_ETAG_LEN);

    ngx_queue_init(&e->holders);
    e->gone = 0;

    e->len = image->len;
    e->type = image->type;
    e->expires = now + cache->ttl;
    e->sn.node.key = hash;
    e->sn.str.data = e->key;
    e->sn.str.len = key.len;

    ngx_rbtree_insert(&cache->sh->rbtree, &e->sn.node);
    ngx_queue_insert_head(&cache->sh->queue, &e->queue);

    /*
     * In order of expiry: with one TTL per zone that is the order of
     * insertion, unless a reload changed the TTL.
     */

    for (q = ngx_queue_last(&cache->sh->expiry);
         q != ngx_queue_sentinel(&cache->sh->expiry);
         q = ngx_queue_prev(q))
    {
        prev = ngx_queue_data(q, ngx_http_unico_selfie_entry_t, expiry);

        if (prev->expires <= e->expires) {
            break;
        }
    }

    ngx_queue_insert_after(q, &e->expiry);

    cache->sh->entries++;
    cache->sh->bytes += e->len;

    ngx_shmtx_unlock(&cache->shpool->mutex);
}


static void
ngx_http_unico_selfie_cache_evict(ngx_http_unico_selfie_cache_t *cache,
    ngx_http_unico_selfie_entry_t *e)
{
    ngx_queue_remove(&e->queue);
    ngx_queue_remove(&e->expiry);
    ngx_rbtree_delete(&cache->sh->rbtree, &e->sn.node);

    cache->sh->entries--;
    cache->sh->bytes -= e->len;

    if (!ngx_queue_empty(&e->holders)) {
        /* still being sent: the last response frees it */
        e->gone = 1;
        ngx_queue_insert_tail(&cache->sh->gone, &e->queue);
        return;
    }

    ngx_http_unico_selfie_cache_free(cache, e);
}


static void
ngx_http_unico_selfie_cache_free(ngx_http_unico_selfie_cache_t *cache,
    ngx_http_unico_selfie_entry_t *e)
{
    /* biometric data: wiped, not just freed */
    ngx_explicit_memzero(e->data, e->len);

    ngx_slab_free_locked(cache->shpool, e->data);
    ngx_slab_free_locked(cache->shpool, e);
}


/* wipes the entries whose TTL has passed; the zone is locked */

static void
ngx_http_unico_selfie_cache_purge(ngx_http_unico_selfie_cache_t *cache,
    time_t now)
{
    ngx_queue_t                    *q;
    ngx_http_unico_selfie_entry_t  *e;

    while (!ngx_queue_empty(&cache->sh->expiry)) {
        q = ngx_queue_head(&cache->sh->expiry);
        e = ngx_queue_data(q, ngx_http_unico_selfie_entry_t, expiry);

        if (e->expires > now) {
            return;
        }

        ngx_http_unico_selfie_cache_evict(cache, e);
        cache->sh->expired++;
    }
}


/*
 * The entries that left the cache while sent, and whose last holders were
 * workers that died: wiped and freed.  The zone is locked.
 */

static void
ngx_http_unico_selfie_cache_reap(ngx_http_unico_selfie_cache_t *cache,
    ngx_log_t *log)
{
    ngx_queue_t                     *q, *next, *hq, *hnext;
    ngx_http_unico_selfie_entry_t   *e;
    ngx_http_unico_selfie_holder_t  *h;

    for (q = ngx_queue_head(&cache->sh->gone);
         q != ngx_queue_sentinel(&cache->sh->gone);
         q = next)
    {
        next = ngx_queue_next(q);
        e = ngx_queue_data(q, ngx_http_unico_selfie_entry_t, queue);

        for (hq = ngx_queue_head(&e->holders);
             hq != ngx_queue_sentinel(&e->holders);
             hq = hnext)
        {
            hnext = ngx_queue_next(hq);
            h = ngx_queue_data(hq, ngx_http_unico_selfie_holder_t, queue);

            if (ngx_http_unico_selfie_worker_gone(h->pid)) {
                ngx_log_error(NGX_LOG_WARN, log, 0,
                              "unico selfie: worker %P died while sending "
                              "a selfie from cache zone \"%V\"",
                              h->pid, &cache->name);

                ngx_queue_remove(hq);
                ngx_slab_free_locked(cache->shpool, h);
            }
        }

        if (ngx_queue_empty(&e->holders)) {
            ngx_queue_remove(q);
            ngx_http_unico_selfie_cache_free(cache, e);
        }
    }
}


/* the cache zones of a cycle, one after the other */

static ngx_http_unico_selfie_cache_t *
ngx_http_unico_selfie_cache_next(ngx_cycle_t *cycle, ngx_list_part_t **part,
    ngx_uint_t *i)
{
    ngx_shm_zone_t  *zone;

    if (*part == NULL) {
        *part = &cycle->shared_memory.part;
        *i = 0;
    }

    for ( ;; ) {

        if (*i >= (*part)->nelts) {
            if ((*part)->next == NULL) {
                return NULL;
            }

            *part = (*part)->next;
            *i = 0;
        }

        zone = (*part)->elts;
        zone = &zone[(*i)++];

        if (zone->tag == &ngx_http_unico_selfie_module
            && zone->init == ngx_http_unico_selfie_cache_init_zone
            && zone->data)
        {
            return zone->data;
        }
    }
}


ngx_int_t
ngx_http_unico_selfie_cache_init_process(ngx_cycle_t *cycle)
{
    ngx_uint_t        i;
    ngx_list_part_t  *part;

    part = NULL;

    if (ngx_http_unico_selfie_cache_next(cycle, &part, &i) == NULL) {
        return NGX_OK;
    }

    ngx_http_unico_selfie_sweep_ev.handler = ngx_http_unico_selfie_cache_sweep;
    ngx_http_unico_selfie_sweep_ev.log = cycle->log;
    ngx_http_unico_selfie_sweep_ev.data = cycle;
    ngx_http_unico_selfie_sweep_ev.cancelable = 1;

    ngx_add_timer(&ngx_http_unico_selfie_sweep_ev,
                  NGX_HTTP_UNICO_CACHE_SWEEP);

    return NGX_OK;
}


/*
 * Selfies go when their TTL has passed, whether anybody asks for them or
 * not: a quiet gateway keeps no face past the TTL.
 */

static void
ngx_http_unico_selfie_cache_sweep(ngx_event_t *ev)
{
    time_t                          now;
    ngx_uint_t                      i;
    ngx_list_part_t                *part;
    ngx_http_unico_selfie_cache_t  *cache;

    now = ngx_time();
    part = NULL;

    while ((cache = ngx_http_unico_selfie_cache_next(ev->data, &part, &i))) {

        if (cache->sh == NULL) {
            continue;
        }

        ngx_shmtx_lock(&cache->shpool->mutex);
        ngx_http_unico_selfie_cache_purge(cache, now);
        ngx_http_unico_selfie_cache_reap(cache, ev->log);
        ngx_shmtx_unlock(&cache->shpool->mutex);
    }

    if (!ngx_exiting && !ngx_quit && !ngx_terminate) {
        ngx_add_timer(ev, NGX_HTTP_UNICO_CACHE_SWEEP);
    }
}


/* the cache's lines of the metrics page: its length, then the lines */

#define NGX_HTTP_UNICO_CACHE_METRICS_LINE                                     \
    (sizeof("unico_selfie_cache_evictions_total{zone=\"\","                  \
            "reason=\"expired\"} \n") + NGX_ATOMIC_T_LEN)

static ngx_str_t  ngx_http_unico_selfie_cache_families[] = {
    ngx_string("# HELP unico_selfie_cache_entries Selfies held in the "
               "cache zone.\n# TYPE unico_selfie_cache_entries gauge\n"),
    ngx_string("# HELP unico_selfie_cache_bytes Image bytes held in the "
               "cache zone.\n# TYPE unico_selfie_cache_bytes gauge\n"),
    ngx_string("# HELP unico_selfie_cache_lookups_total Cache lookups, by "
               "result.\n# TYPE unico_selfie_cache_lookups_total counter\n"),
    ngx_string("# HELP unico_selfie_cache_evictions_total Selfies removed "
               "from the cache, by reason.\n"
               "# TYPE unico_selfie_cache_evictions_total counter\n")
};


size_t
ngx_http_unico_selfie_cache_metrics_len(ngx_cycle_t *cycle)
{
    size_t                          len;
    ngx_uint_t                      i, f;
    ngx_list_part_t                *part;
    ngx_http_unico_selfie_cache_t  *cache;

    len = 0;

    for (f = 0; f < 4; f++) {
        len += ngx_http_unico_selfie_cache_families[f].len;
    }

    part = NULL;

    while ((cache = ngx_http_unico_selfie_cache_next(cycle, &part, &i))) {
        len += 6 * (NGX_HTTP_UNICO_CACHE_METRICS_LINE + cache->name.len);
    }

    return len;
}


u_char *
ngx_http_unico_selfie_cache_metrics(ngx_cycle_t *cycle, u_char *p)
{
    ngx_uint_t                         i, f;
    ngx_list_part_t                   *part;
    ngx_http_unico_selfie_cache_t     *cache;
    ngx_http_unico_selfie_cache_sh_t   sh;

    part = NULL;

    if (ngx_http_unico_selfie_cache_next(cycle, &part, &i) == NULL) {
        return p;
    }

    for (f = 0; f < 4; f++) {
        p = ngx_cpymem(p, ngx_http_unico_selfie_cache_families[f].data,
                       ngx_http_unico_selfie_cache_families[f].len);

        part = NULL;

        while ((cache = ngx_http_unico_selfie_cache_next(cycle, &part, &i))) {

            if (cache->sh == NULL) {
                continue;
            }

            ngx_shmtx_lock(&cache->shpool->mutex);
            sh = *cache->sh;
            ngx_shmtx_unlock(&cache->shpool->mutex);

            switch (f) {

            case 0:
                p = ngx_sprintf(p, "unico_selfie_cache_entries{zone=\"%V\"} "
                                "%ui\n", &cache->name, sh.entries);
                break;

            case 1:
                p = ngx_sprintf(p, "unico_selfie_cache_bytes{zone=\"%V\"} "
                                "%uz\n", &cache->name, sh.bytes);
                break;

            case 2:
                p = ngx_sprintf(p, "unico_selfie_cache_lookups_total{zone="
                                "\"%V\",result=\"hit\"} %ui\n"
                                "unico_selfie_cache_lookups_total{zone="
                                "\"%V\",result=\"miss\"} %ui\n",
                                &cache->name, sh.hits,
                                &cache->name, sh.misses);
                break;

            default:
                p = ngx_sprintf(p, "unico_selfie_cache_evictions_total{zone="
                                "\"%V\",reason=\"expired\"} %ui\n"
                                "unico_selfie_cache_evictions_total{zone="
                                "\"%V\",reason=\"lru\"} %ui\n",
                                &cache->name, sh.expired,
                                &cache->name, sh.evicted);
            }
        }
    }

    return p;
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

    if (conf->cache_zone->data == NULL
        || conf->cache_zone->init != ngx_http_unico_selfie_cache_init_zone)
    {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "unknown cache zone \"%V\": declare it with "
                           "\"unico_selfie_cache_zone\"",
                           &conf->cache_zone->shm.name);
        return NGX_CONF_ERROR;
    }

    conf->cache = conf->cache_zone->data;

    return NGX_CONF_OK;
}


