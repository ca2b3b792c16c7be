
/*
 * Copyright (C) ngx_unico_selfie_module authors
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

#include <openssl/evp.h>

#include "ngx_http_unico_selfie.h"


#define NGX_HTTP_UNICO_BUDGET_POLL  10          /* ms */
#define NGX_HTTP_UNICO_CACHE_SWEEP  1000        /* ms */


typedef struct {
    ngx_str_node_t             sn;            /* processId + credentials */
    ngx_queue_t                queue;         /* LRU */
    ngx_queue_t                expiry;        /* soonest to expire first */
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
    ngx_queue_t                expiry;

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


typedef struct {
    uint64_t                   tokens;        /* in 1/1000 of a call */
    ngx_msec_t                 last;
} ngx_http_unico_selfie_budget_sh_t;


struct ngx_http_unico_selfie_budget_s {
    ngx_uint_t                 rate;          /* calls per 1000 s */
    ngx_uint_t                 burst;         /* calls */
    ngx_msec_t                 wait;
    ngx_shm_zone_t            *zone;
    ngx_slab_pool_t           *shpool;
    ngx_http_unico_selfie_budget_sh_t  *sh;
};


/* every second each worker wipes the selfies whose TTL has passed */

static ngx_event_t        ngx_http_unico_selfie_sweep_ev;


/* this worker's calls in flight, by processId and credentials */

static ngx_rbtree_t       ngx_http_unico_selfie_flights;
static ngx_rbtree_node_t  ngx_http_unico_selfie_flights_sentinel;
static ngx_uint_t         ngx_http_unico_selfie_flights_init;


static ngx_uint_t ngx_http_unico_selfie_reserved_zone(ngx_str_t *name);
static ngx_int_t ngx_http_unico_selfie_cache_init_zone(
    ngx_shm_zone_t *shm_zone, void *data);
static ngx_int_t ngx_http_unico_selfie_budget_init_zone(
    ngx_shm_zone_t *shm_zone, void *data);
static ngx_int_t ngx_http_unico_selfie_key(ngx_http_request_t *r,
    ngx_http_unico_selfie_ctx_t *ctx, ngx_str_t *key, uint32_t *hash);
static void ngx_http_unico_selfie_cache_evict(
    ngx_http_unico_selfie_cache_t *cache, ngx_http_unico_selfie_entry_t *e);
static void ngx_http_unico_selfie_cache_purge(
    ngx_http_unico_selfie_cache_t *cache, time_t now);
static ngx_http_unico_selfie_cache_t *ngx_http_unico_selfie_cache_next(
    ngx_cycle_t *cycle, ngx_list_part_t **part, ngx_uint_t *i);
static void ngx_http_unico_selfie_cache_sweep(ngx_event_t *ev);
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
 * The key of a flight or a cache entry: the processId in lower case and
 * who asks, a digest of the API prefix and the credentials (the service
 * account's fingerprint, or the token): the same across reloads, and never
 * the same for two tenants.  Computed once per request.
 */

static ngx_int_t
ngx_http_unico_selfie_key(ngx_http_request_t *r,
    ngx_http_unico_selfie_ctx_t *ctx, ngx_str_t *key, uint32_t *hash)
{
    u_char                             md[EVP_MAX_MD_SIZE];
    ngx_str_t                          cred;
    unsigned int                       n;
    EVP_MD_CTX                        *mdctx;
    ngx_http_unico_selfie_loc_conf_t  *uslcf;

    key->data = ctx->key;
    key->len = UNICO_SELFIE_KEY_LEN;

    if (ctx->key_set) {
        *hash = ngx_crc32_short(key->data, key->len);
        return NGX_OK;
    }

    uslcf = ngx_http_get_module_loc_conf(r, ngx_http_unico_selfie_module);

    if (uslcf->account) {
        ngx_http_unico_selfie_account_id(uslcf->account, &cred);

    } else {
        cred = ctx->authorization;
    }

    mdctx = EVP_MD_CTX_new();
    if (mdctx == NULL) {
        return NGX_ERROR;
    }

    n = 0;

    if (EVP_DigestInit_ex(mdctx, EVP_sha256(), NULL) != 1
        || EVP_DigestUpdate(mdctx, uslcf->api.data, uslcf->api.len) != 1
        || EVP_DigestUpdate(mdctx, uslcf->account ? "\na" : "\nt", 2) != 1
        || EVP_DigestUpdate(mdctx, cred.data, cred.len) != 1
        || EVP_DigestFinal_ex(mdctx, md, &n) != 1
        || n < UNICO_SELFIE_KEY_LEN - UNICO_UUID_LEN)
    {
        EVP_MD_CTX_free(mdctx);
        return NGX_ERROR;
    }

    EVP_MD_CTX_free(mdctx);

    ngx_strlow(ctx->key, ctx->process_id.data, UNICO_UUID_LEN);
    ngx_memcpy(ctx->key + UNICO_UUID_LEN, md,
               UNICO_SELFIE_KEY_LEN - UNICO_UUID_LEN);

    ctx->key_set = 1;

    *hash = ngx_crc32_short(key->data, key->len);

    return NGX_OK;
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

    if (ngx_http_unico_selfie_key(r, ctx, &key, &hash) != NGX_OK) {
        return NGX_DECLINED;
    }

    ngx_shmtx_lock(&cache->shpool->mutex);

    ngx_http_unico_selfie_cache_purge(cache, ngx_time());

    sn = ngx_str_rbtree_lookup(&cache->sh->rbtree, &key, hash);

    if (sn == NULL) {
        cache->sh->misses++;
        ngx_shmtx_unlock(&cache->shpool->mutex);
        return NGX_DECLINED;
    }

    e = (ngx_http_unico_selfie_entry_t *) sn;

    ngx_queue_remove(&e->queue);
    ngx_queue_insert_head(&cache->sh->queue, &e->queue);

    /* a copy: the entry may be evicted while the response is sent */

    p = ngx_palloc(r->pool, e->len);
    if (p == NULL) {
        ngx_shmtx_unlock(&cache->shpool->mutex);
        return NGX_DECLINED;
    }

    cache->sh->hits++;

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
    time_t                             now;
    ngx_uint_t                         tries;
    ngx_queue_t                       *q;
    ngx_str_node_t                    *sn;
    ngx_http_unico_selfie_cache_t     *cache;
    ngx_http_unico_selfie_entry_t     *e, *prev;
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

    if (ngx_http_unico_selfie_key(r, ctx, &key, &hash) != NGX_OK) {
        return;
    }

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

    if (ngx_http_unico_selfie_key(r, ctx, &key, &hash) != NGX_OK) {
        /* no coalescing for this one: it calls on its own */
        return NGX_DECLINED;
    }

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

        if (image == NULL && (outcome == NGX_HTTP_UNICO_INTERNAL
                              || outcome == NGX_HTTP_UNICO_CLIENT_CLOSED))
        {
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
    shpool = (ngx_slab_pool_t *) shm_zone->shm.addr;
    budget->shpool = shpool;

    if (obudget) {
        budget->sh = obudget->sh;
        return NGX_OK;
    }

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

    /*
     * The zone's mutex, not a lock of its own: nginx releases it when a
     * worker dies holding it.
     */

    ngx_shmtx_lock(&budget->shpool->mutex);

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
        ngx_shmtx_unlock(&budget->shpool->mutex);

        ctx->budget_waiting = 0;
        return NGX_OK;
    }

    ngx_shmtx_unlock(&budget->shpool->mutex);

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


/* a call that could not be made after all gives its share back */

void
ngx_http_unico_selfie_budget_refund(ngx_http_request_t *r)
{
    uint64_t                           cap;
    ngx_http_unico_selfie_budget_t    *budget;
    ngx_http_unico_selfie_loc_conf_t  *uslcf;

    uslcf = ngx_http_get_module_loc_conf(r, ngx_http_unico_selfie_module);
    budget = uslcf->budget;

    if (budget == NULL) {
        return;
    }

    cap = (uint64_t) budget->burst * 1000;

    ngx_shmtx_lock(&budget->shpool->mutex);
    budget->sh->tokens = ngx_min(budget->sh->tokens + 1000, cap);
    ngx_shmtx_unlock(&budget->shpool->mutex);
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
