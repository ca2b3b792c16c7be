
/*
 * Copyright (C) ngx_unico_selfie_module authors
 *
 * Directives, configuration and variables.  The request flow lives in
 * ngx_http_unico_selfie_handler.c, the pure payload code in
 * unico_selfie_payload.c.
 */


#include <ngx_config.h>
#include <ngx_core.h>
#include <ngx_http.h>

#include "ngx_http_unico_selfie.h"


static ngx_int_t ngx_http_unico_selfie_add_variables(ngx_conf_t *cf);
static ngx_int_t ngx_http_unico_selfie_init(ngx_conf_t *cf);
static ngx_int_t ngx_http_unico_selfie_init_module(ngx_cycle_t *cycle);
static ngx_int_t ngx_http_unico_selfie_init_process(ngx_cycle_t *cycle);
static void *ngx_http_unico_selfie_create_loc_conf(ngx_conf_t *cf);
static char *ngx_http_unico_selfie_merge_loc_conf(ngx_conf_t *cf,
    void *parent, void *child);
static char *ngx_http_unico_selfie(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf);
static char *ngx_http_unico_selfie_api(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf);
static char *ngx_http_unico_selfie_token_slot(ngx_conf_t *cf,
    ngx_command_t *cmd, void *conf);

static ngx_int_t ngx_http_unico_selfie_var(ngx_http_variable_value_t *v,
    u_char *data, size_t len);
static ngx_int_t ngx_http_unico_selfie_authorization_variable(
    ngx_http_request_t *r, ngx_http_variable_value_t *v, uintptr_t data);
static ngx_int_t ngx_http_unico_selfie_token_body_variable(
    ngx_http_request_t *r, ngx_http_variable_value_t *v, uintptr_t data);
static ngx_int_t ngx_http_unico_selfie_reason_variable(ngx_http_request_t *r,
    ngx_http_variable_value_t *v, uintptr_t data);
static ngx_int_t ngx_http_unico_selfie_status_variable(ngx_http_request_t *r,
    ngx_http_variable_value_t *v, uintptr_t data);
static ngx_int_t ngx_http_unico_selfie_bytes_variable(ngx_http_request_t *r,
    ngx_http_variable_value_t *v, uintptr_t data);
static ngx_int_t ngx_http_unico_selfie_upstream_time_variable(
    ngx_http_request_t *r, ngx_http_variable_value_t *v, uintptr_t data);
static ngx_int_t ngx_http_unico_selfie_token_fresh_variable(
    ngx_http_request_t *r, ngx_http_variable_value_t *v, uintptr_t data);


static ngx_command_t  ngx_http_unico_selfie_commands[] = {

    { ngx_string("unico_selfie"),
      NGX_HTTP_LOC_CONF|NGX_CONF_TAKE1,
      ngx_http_unico_selfie,
      NGX_HTTP_LOC_CONF_OFFSET,
      0,
      NULL },

    { ngx_string("unico_selfie_api"),
      NGX_HTTP_MAIN_CONF|NGX_HTTP_SRV_CONF|NGX_HTTP_LOC_CONF|NGX_CONF_TAKE1,
      ngx_http_unico_selfie_api,
      NGX_HTTP_LOC_CONF_OFFSET,
      offsetof(ngx_http_unico_selfie_loc_conf_t, api),
      NULL },

    { ngx_string("unico_selfie_token"),
      NGX_HTTP_MAIN_CONF|NGX_HTTP_SRV_CONF|NGX_HTTP_LOC_CONF|NGX_CONF_TAKE1,
      ngx_http_unico_selfie_token_slot,
      NGX_HTTP_LOC_CONF_OFFSET,
      offsetof(ngx_http_unico_selfie_loc_conf_t, token),
      NULL },

    { ngx_string("unico_selfie_service_account"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_BLOCK|NGX_CONF_TAKE1,
      ngx_http_unico_selfie_service_account,
      0,
      0,
      NULL },

    { ngx_string("unico_selfie_account"),
      NGX_HTTP_MAIN_CONF|NGX_HTTP_SRV_CONF|NGX_HTTP_LOC_CONF|NGX_CONF_TAKE1,
      ngx_http_unico_selfie_account,
      NGX_HTTP_LOC_CONF_OFFSET,
      0,
      NULL },

    { ngx_string("unico_selfie_cache_zone"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_TAKE12,
      ngx_http_unico_selfie_cache_zone,
      0,
      0,
      NULL },

    { ngx_string("unico_selfie_cache"),
      NGX_HTTP_MAIN_CONF|NGX_HTTP_SRV_CONF|NGX_HTTP_LOC_CONF|NGX_CONF_TAKE1,
      ngx_http_unico_selfie_cache,
      NGX_HTTP_LOC_CONF_OFFSET,
      0,
      NULL },

    { ngx_string("unico_selfie_budget"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_TAKE123,
      ngx_http_unico_selfie_budget,
      NGX_HTTP_LOC_CONF_OFFSET,
      0,
      NULL },

    { ngx_string("unico_selfie_max_size"),
      NGX_HTTP_MAIN_CONF|NGX_HTTP_SRV_CONF|NGX_HTTP_LOC_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_size_slot,
      NGX_HTTP_LOC_CONF_OFFSET,
      offsetof(ngx_http_unico_selfie_loc_conf_t, max_size),
      NULL },

    { ngx_string("unico_selfie_signature_keys"),
      NGX_HTTP_MAIN_CONF|NGX_HTTP_SRV_CONF|NGX_HTTP_LOC_CONF|NGX_CONF_TAKE1,
      ngx_http_unico_selfie_signature_keys,
      NGX_HTTP_LOC_CONF_OFFSET,
      0,
      NULL },

    { ngx_string("unico_selfie_signature_skew"),
      NGX_HTTP_MAIN_CONF|NGX_HTTP_SRV_CONF|NGX_HTTP_LOC_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_sec_slot,
      NGX_HTTP_LOC_CONF_OFFSET,
      offsetof(ngx_http_unico_selfie_loc_conf_t, signature_skew),
      NULL },

    { ngx_string("unico_selfie_cache_control"),
      NGX_HTTP_MAIN_CONF|NGX_HTTP_SRV_CONF|NGX_HTTP_LOC_CONF|NGX_CONF_TAKE1,
      ngx_http_unico_selfie_cache_control,
      NGX_HTTP_LOC_CONF_OFFSET,
      0,
      NULL },

    { ngx_string("unico_selfie_metrics"),
      NGX_HTTP_LOC_CONF|NGX_CONF_NOARGS,
      ngx_http_unico_selfie_metrics,
      NGX_HTTP_LOC_CONF_OFFSET,
      0,
      NULL },

      ngx_null_command
};


static ngx_http_module_t  ngx_http_unico_selfie_module_ctx = {
    ngx_http_unico_selfie_add_variables,   /* preconfiguration */
    ngx_http_unico_selfie_init,            /* postconfiguration */

    NULL,                                  /* create main configuration */
    NULL,                                  /* init main configuration */

    NULL,                                  /* create server configuration */
    NULL,                                  /* merge server configuration */

    ngx_http_unico_selfie_create_loc_conf, /* create location configuration */
    ngx_http_unico_selfie_merge_loc_conf   /* merge location configuration */
};


ngx_module_t  ngx_http_unico_selfie_module = {
    NGX_MODULE_V1,
    &ngx_http_unico_selfie_module_ctx,     /* module context */
    ngx_http_unico_selfie_commands,        /* module directives */
    NGX_HTTP_MODULE,                       /* module type */
    NULL,                                  /* init master */
    ngx_http_unico_selfie_init_module,     /* init module */
    ngx_http_unico_selfie_init_process,    /* init process */
    NULL,                                  /* init thread */
    NULL,                                  /* exit thread */
    NULL,                                  /* exit process */
    NULL,                                  /* exit master */
    NGX_MODULE_V1_PADDING
};


static ngx_http_variable_t  ngx_http_unico_selfie_vars[] = {

    /*
     * Not cacheable: subrequests share their parent's variable values, and
     * this one must be empty everywhere but in the module's own subrequest.
     */
    { ngx_string("unico_selfie_authorization"), NULL,
      ngx_http_unico_selfie_authorization_variable, 0,
      NGX_HTTP_VAR_NOCACHEABLE|NGX_HTTP_VAR_NOHASH, 0 },

    /* the token request's form body: the same, for the token location */
    { ngx_string("unico_selfie_token_body"), NULL,
      ngx_http_unico_selfie_token_body_variable, 0,
      NGX_HTTP_VAR_NOCACHEABLE|NGX_HTTP_VAR_NOHASH, 0 },

    { ngx_string("unico_selfie_reason"), NULL,
      ngx_http_unico_selfie_reason_variable, 0,
      NGX_HTTP_VAR_NOCACHEABLE, 0 },

    { ngx_string("unico_selfie_upstream_status"), NULL,
      ngx_http_unico_selfie_status_variable, 0,
      NGX_HTTP_VAR_NOCACHEABLE, 0 },

    { ngx_string("unico_selfie_bytes"), NULL,
      ngx_http_unico_selfie_bytes_variable, 0,
      NGX_HTTP_VAR_NOCACHEABLE, 0 },

    { ngx_string("unico_selfie_upstream_time"), NULL,
      ngx_http_unico_selfie_upstream_time_variable, 0,
      NGX_HTTP_VAR_NOCACHEABLE, 0 },

    { ngx_string("unico_selfie_token_fresh"), NULL,
      ngx_http_unico_selfie_token_fresh_variable, 0,
      NGX_HTTP_VAR_NOCACHEABLE, 0 },

      ngx_http_null_variable
};


static ngx_int_t
ngx_http_unico_selfie_add_variables(ngx_conf_t *cf)
{
    ngx_http_variable_t  *var, *v;

    for (v = ngx_http_unico_selfie_vars; v->name.len; v++) {
        var = ngx_http_add_variable(cf, &v->name, v->flags);
        if (var == NULL) {
            return NGX_ERROR;
        }

        var->get_handler = v->get_handler;
        var->data = v->data;
    }

    return NGX_OK;
}


static ngx_int_t
ngx_http_unico_selfie_init(ngx_conf_t *cf)
{
    if (ngx_http_unico_selfie_metrics_init(cf) != NGX_OK) {
        return NGX_ERROR;
    }

    return ngx_http_unico_selfie_filter_init(cf);
}


/* the new configuration is committed: the shared state may change now */

static ngx_int_t
ngx_http_unico_selfie_init_module(ngx_cycle_t *cycle)
{
    return ngx_http_unico_selfie_token_init(cycle);
}


static ngx_int_t
ngx_http_unico_selfie_init_process(ngx_cycle_t *cycle)
{
    return ngx_http_unico_selfie_cache_init_process(cycle);
}


static void *
ngx_http_unico_selfie_create_loc_conf(ngx_conf_t *cf)
{
    ngx_http_unico_selfie_loc_conf_t  *conf;

    conf = ngx_pcalloc(cf->pool, sizeof(ngx_http_unico_selfie_loc_conf_t));
    if (conf == NULL) {
        return NULL;
    }

    /*
     * set by ngx_pcalloc():
     *
     *     conf->process_id = NULL;
     *     conf->api = { 0, NULL };
     *     conf->file = NULL;
     *     conf->line = 0;
     */

    conf->token = NGX_CONF_UNSET_PTR;
    conf->account = NGX_CONF_UNSET_PTR;
    conf->cache = NGX_CONF_UNSET_PTR;
    conf->budget = NGX_CONF_UNSET_PTR;
    conf->max_size = NGX_CONF_UNSET_SIZE;
    conf->signature_keys = NGX_CONF_UNSET_PTR;
    conf->signature_skew = NGX_CONF_UNSET;

    return conf;
}


static char *
ngx_http_unico_selfie_merge_loc_conf(ngx_conf_t *cf, void *parent,
    void *child)
{
    ngx_http_unico_selfie_loc_conf_t *prev = parent;
    ngx_http_unico_selfie_loc_conf_t *conf = child;

    ngx_str_t  cred;

    ngx_conf_merge_str_value(conf->api, prev->api, "");

    /*
     * The credentials set in the innermost level win: a location with
     * "unico_selfie_token" does not inherit an account, and one with
     * "unico_selfie_account <name>" does not inherit a token.
     */

    if (conf->token != NGX_CONF_UNSET_PTR) {
        if (conf->account == NGX_CONF_UNSET_PTR) {
            conf->account = NULL;
        }

    } else if (conf->account != NGX_CONF_UNSET_PTR && conf->account != NULL)
    {
        conf->token = NULL;
    }

    ngx_conf_merge_ptr_value(conf->token, prev->token, NULL);
    ngx_conf_merge_ptr_value(conf->account, prev->account, NULL);
    ngx_conf_merge_ptr_value(conf->budget, prev->budget, NULL);

    if (ngx_http_unico_selfie_cache_merge(cf, conf, prev) != NGX_CONF_OK) {
        return NGX_CONF_ERROR;
    }
    ngx_conf_merge_size_value(conf->max_size, prev->max_size,
                              5 * 1024 * 1024);
    ngx_conf_merge_ptr_value(conf->signature_keys, prev->signature_keys,
                             NULL);
    ngx_conf_merge_sec_value(conf->signature_skew, prev->signature_skew, 30);
    ngx_conf_merge_str_value(conf->cache_control, prev->cache_control,
                             "private, no-store");

    if (conf->process_id == NULL) {
        return NGX_CONF_OK;
    }

    if (conf->api.len == 0) {
        ngx_log_error(NGX_LOG_EMERG, cf->log, 0,
                      "\"unico_selfie\" in %s:%ui needs \"unico_selfie_api\" "
                      "(the internal location that proxies to Unico)",
                      conf->file, conf->line);
        return NGX_CONF_ERROR;
    }

    if (conf->token == NULL && conf->account == NULL) {
        ngx_log_error(NGX_LOG_EMERG, cf->log, 0,
                      "\"unico_selfie\" in %s:%ui needs \"unico_selfie_token\" "
                      "or \"unico_selfie_account\" (the credentials to "
                      "present to Unico)",
                      conf->file, conf->line);
        return NGX_CONF_ERROR;
    }

    /*
     * The credentials' part of the cache and coalescing key, once: for an
     * account, or a token without variables ("Bearer <token>", as a
     * request would make it).
     */

    if (conf->account) {
        ngx_http_unico_selfie_account_id(conf->account, &cred);

        if (ngx_http_unico_selfie_credentials_id(&conf->api, 1, &cred,
                                                 conf->credentials_id)
            != NGX_OK)
        {
            return NGX_CONF_ERROR;
        }

        conf->credentials_fixed = 1;

    } else if (conf->token->lengths == NULL) {
        cred.len = sizeof("Bearer ") - 1 + conf->token->value.len;
        cred.data = ngx_pnalloc(cf->pool, cred.len);
        if (cred.data == NULL) {
            return NGX_CONF_ERROR;
        }

        ngx_memcpy(ngx_cpymem(cred.data, "Bearer ", sizeof("Bearer ") - 1),
                   conf->token->value.data, conf->token->value.len);

        if (ngx_http_unico_selfie_credentials_id(&conf->api, 0, &cred,
                                                 conf->credentials_id)
            != NGX_OK)
        {
            return NGX_CONF_ERROR;
        }

        conf->credentials_fixed = 1;
    }

    if (conf->max_size == 0) {
        ngx_log_error(NGX_LOG_EMERG, cf->log, 0,
                      "\"unico_selfie_max_size\" must not be 0 "
                      "for \"unico_selfie\" in %s:%ui",
                      conf->file, conf->line);
        return NGX_CONF_ERROR;
    }

    return NGX_CONF_OK;
}


static char *
ngx_http_unico_selfie(ngx_conf_t *cf, ngx_command_t *cmd, void *conf)
{
    ngx_http_unico_selfie_loc_conf_t *uslcf = conf;

    ngx_str_t                         *value;
    ngx_http_core_loc_conf_t          *clcf;
    ngx_http_compile_complex_value_t   ccv;

    if (uslcf->process_id != NULL) {
        return "is duplicate";
    }

    if (uslcf->metrics) {
        return "cannot be in the location of \"unico_selfie_metrics\"";
    }

    value = cf->args->elts;

    uslcf->process_id = ngx_palloc(cf->pool, sizeof(ngx_http_complex_value_t));
    if (uslcf->process_id == NULL) {
        return NGX_CONF_ERROR;
    }

    ngx_memzero(&ccv, sizeof(ngx_http_compile_complex_value_t));

    ccv.cf = cf;
    ccv.value = &value[1];
    ccv.complex_value = uslcf->process_id;

    if (ngx_http_compile_complex_value(&ccv) != NGX_OK) {
        return NGX_CONF_ERROR;
    }

    uslcf->file = cf->conf_file->file.name.data;
    uslcf->line = cf->conf_file->line;

    clcf = ngx_http_conf_get_module_loc_conf(cf, ngx_http_core_module);
    clcf->handler = ngx_http_unico_selfie_handler;

    return NGX_CONF_OK;
}


/* unico_selfie_token: one source of credentials per level */

static char *
ngx_http_unico_selfie_token_slot(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf)
{
    ngx_http_unico_selfie_loc_conf_t *uslcf = conf;

    if (uslcf->account != NGX_CONF_UNSET_PTR && uslcf->account != NULL) {
        return "cannot be used with \"unico_selfie_account\" on the same "
               "level";
    }

    return ngx_http_set_complex_value_slot(cf, cmd, conf);
}


static char *
ngx_http_unico_selfie_api(ngx_conf_t *cf, ngx_command_t *cmd, void *conf)
{
    ngx_str_t  *value;
    char       *rv;

    rv = ngx_conf_set_str_slot(cf, cmd, conf);
    if (rv != NGX_CONF_OK) {
        return rv;
    }

    value = (ngx_str_t *) ((char *) conf + cmd->offset);

    if (value->len == 0 || value->data[0] != '/') {
        return "must be a URI prefix that starts with \"/\"";
    }

    /* "/_unico_api/" and "/_unico_api" name the same prefix */

    while (value->len > 1 && value->data[value->len - 1] == '/') {
        value->len--;
    }

    return NGX_CONF_OK;
}



/* every variable of the module: a value valid for this evaluation only */

static ngx_int_t
ngx_http_unico_selfie_var(ngx_http_variable_value_t *v, u_char *data,
    size_t len)
{
    v->len = len;
    v->valid = 1;
    v->no_cacheable = 1;
    v->not_found = 0;
    v->data = data;

    return NGX_OK;
}

/* the module's subrequests' own values: empty in any other request */

static ngx_int_t
ngx_http_unico_selfie_authorization_variable(ngx_http_request_t *r,
    ngx_http_variable_value_t *v, uintptr_t data)
{
    ngx_http_unico_selfie_fetch_t  *f;

    f = (r != r->main)
        ? ngx_http_get_module_ctx(r, ngx_http_unico_selfie_module) : NULL;

    if (f == NULL || f->subrequest != r || f->authorization.len == 0) {
        v->not_found = 1;
        return NGX_OK;
    }

    return ngx_http_unico_selfie_var(v, f->authorization.data,
                                     f->authorization.len);
}


static ngx_int_t
ngx_http_unico_selfie_token_body_variable(ngx_http_request_t *r,
    ngx_http_variable_value_t *v, uintptr_t data)
{
    ngx_http_unico_selfie_fetch_t  *f;

    f = (r != r->main)
        ? ngx_http_get_module_ctx(r, ngx_http_unico_selfie_module) : NULL;

    if (f == NULL || f->subrequest != r || f->form.len == 0) {
        v->not_found = 1;
        return NGX_OK;
    }

    return ngx_http_unico_selfie_var(v, f->form.data, f->form.len);
}


static ngx_int_t
ngx_http_unico_selfie_reason_variable(ngx_http_request_t *r,
    ngx_http_variable_value_t *v, uintptr_t data)
{
    const ngx_str_t              *name;
    ngx_http_unico_selfie_ctx_t  *ctx;

    ctx = ngx_http_unico_selfie_get_ctx(r->main);

    if (ctx == NULL) {
        v->not_found = 1;
        return NGX_OK;
    }

    name = ngx_http_unico_selfie_outcome_name(ctx->outcome);

    return ngx_http_unico_selfie_var(v, name->data, name->len);
}


static ngx_int_t
ngx_http_unico_selfie_status_variable(ngx_http_request_t *r,
    ngx_http_variable_value_t *v, uintptr_t data)
{
    u_char                       *p;
    ngx_http_unico_selfie_ctx_t  *ctx;

    ctx = ngx_http_unico_selfie_get_ctx(r->main);

    if (ctx == NULL || ctx->status == 0) {
        v->not_found = 1;
        return NGX_OK;
    }

    p = ngx_pnalloc(r->pool, NGX_INT_T_LEN);
    if (p == NULL) {
        return NGX_ERROR;
    }

    return ngx_http_unico_selfie_var(v, p,
                                     ngx_sprintf(p, "%ui", ctx->status) - p);
}


static ngx_int_t
ngx_http_unico_selfie_bytes_variable(ngx_http_request_t *r,
    ngx_http_variable_value_t *v, uintptr_t data)
{
    u_char                       *p;
    ngx_http_unico_selfie_ctx_t  *ctx;

    ctx = ngx_http_unico_selfie_get_ctx(r->main);

    if (ctx == NULL) {
        v->not_found = 1;
        return NGX_OK;
    }

    p = ngx_pnalloc(r->pool, NGX_SIZE_T_LEN);
    if (p == NULL) {
        return NGX_ERROR;
    }

    return ngx_http_unico_selfie_var(v, p,
                                  ngx_sprintf(p, "%uz",
                                      ctx->outcome == NGX_HTTP_UNICO_OK
                                      ? ctx->image.len : 0) - p);
}


/* seconds with millisecond resolution, as $upstream_response_time */

static ngx_int_t
ngx_http_unico_selfie_upstream_time_variable(ngx_http_request_t *r,
    ngx_http_variable_value_t *v, uintptr_t data)
{
    u_char                       *p;
    ngx_msec_t                    ms;
    ngx_http_unico_selfie_ctx_t  *ctx;

    ctx = ngx_http_unico_selfie_get_ctx(r->main);

    if (ctx == NULL || ctx->fetch.subrequest == NULL || !ctx->fetch.done) {
        v->not_found = 1;
        return NGX_OK;
    }

    p = ngx_pnalloc(r->pool, NGX_TIME_T_LEN + 4);
    if (p == NULL) {
        return NGX_ERROR;
    }

    ms = ctx->fetch.time;

    return ngx_http_unico_selfie_var(v, p,
                                     ngx_sprintf(p, "%T.%03M",
                                                 (time_t) (ms / 1000),
                                                 ms % 1000)
                                     - p);
}


/*
 * "1": the request waited for a newly minted token; "0": it used a token
 * already held (always, for unico_selfie_token); empty when it ended
 * before a token was needed.
 */

static ngx_int_t
ngx_http_unico_selfie_token_fresh_variable(ngx_http_request_t *r,
    ngx_http_variable_value_t *v, uintptr_t data)
{
    ngx_http_unico_selfie_ctx_t  *ctx;

    ctx = ngx_http_unico_selfie_get_ctx(r->main);

    if (ctx == NULL || (!ctx->token_fresh && ctx->authorization.len == 0)) {
        v->not_found = 1;
        return NGX_OK;
    }

    return ngx_http_unico_selfie_var(v,
                                 (u_char *) (ctx->token_fresh ? "1" : "0"), 1);
}
