
/*
 * Copyright (C) ngx_unico_selfie_module authors
 * SPDX-License-Identifier: BSD-2-Clause
 *
 * The budget stage: an optional token bucket shared by all workers that
 * bounds the calls to Unico.  Over it a request waits a bounded time, or
 * gets 503 with Retry-After instead of the tenant getting Unico's 429.
 */


#include <ngx_config.h>
#include <ngx_core.h>
#include <ngx_http.h>

#include "ngx_http_unico_selfie.h"


#define NGX_HTTP_UNICO_BUDGET_POLL  10          /* ms */


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


static ngx_int_t ngx_http_unico_selfie_budget_init_zone(
    ngx_shm_zone_t *shm_zone, void *data);


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
 * The budget stage: one call's worth of the budget.  NGX_OK, taken;
 * NGX_AGAIN, the request waits for room (a timer wakes it); NGX_DONE, over
 * budget for longer than the wait: 503 with Retry-After.
 */

ngx_int_t
ngx_http_unico_selfie_budget_stage(ngx_http_request_t *r,
    ngx_http_unico_selfie_ctx_t *ctx)
{
    uint64_t                           tokens, cap;
    ngx_msec_t                         now, elapsed;
    ngx_http_unico_selfie_budget_t    *budget;
    ngx_http_unico_selfie_budget_sh_t *sh;
    ngx_http_unico_selfie_loc_conf_t  *uslcf;

    uslcf = ngx_http_get_module_loc_conf(r, ngx_http_unico_selfie_module);
    budget = uslcf->budget;

    if (budget == NULL || ctx->budget_taken) {
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
        ctx->budget_taken = 1;
        return NGX_OK;
    }

    ngx_shmtx_unlock(&budget->shpool->mutex);

    if (!ctx->budget_waiting) {
        ctx->budget_waiting = 1;
        ctx->budget_wait = now;

    } else if (now - ctx->budget_wait >= budget->wait) {
        ctx->budget_waiting = 0;
    }

    if (!ctx->budget_waiting || budget->wait == 0) {
        ctx->budget_waiting = 0;
        ngx_str_set(&ctx->retry_after, "1");
        ctx->outcome = NGX_HTTP_UNICO_OVER_BUDGET;
        return NGX_DONE;
    }

    ctx->budget_ev.handler = ngx_http_unico_selfie_wake;
    ctx->budget_ev.data = r;
    ctx->budget_ev.log = r->connection->log;

    ngx_add_timer(&ctx->budget_ev, NGX_HTTP_UNICO_BUDGET_POLL);

    return NGX_AGAIN;
}


/* a call that could not be made after all gives its share back */

void
ngx_http_unico_selfie_budget_refund(ngx_http_request_t *r,
    ngx_http_unico_selfie_ctx_t *ctx)
{
    uint64_t                           cap;
    ngx_http_unico_selfie_budget_t    *budget;
    ngx_http_unico_selfie_loc_conf_t  *uslcf;

    uslcf = ngx_http_get_module_loc_conf(r, ngx_http_unico_selfie_module);
    budget = uslcf->budget;

    if (budget == NULL || !ctx->budget_taken) {
        return;
    }

    ctx->budget_taken = 0;
    cap = (uint64_t) budget->burst * 1000;

    ngx_shmtx_lock(&budget->shpool->mutex);
    budget->sh->tokens = ngx_min(budget->sh->tokens + 1000, cap);
    ngx_shmtx_unlock(&budget->shpool->mutex);
}


void
ngx_http_unico_selfie_budget_cleanup(ngx_http_unico_selfie_ctx_t *ctx)
{
    if (ctx->budget_ev.timer_set) {
        ngx_del_timer(&ctx->budget_ev);
    }
}
