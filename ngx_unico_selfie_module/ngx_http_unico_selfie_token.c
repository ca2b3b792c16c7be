
/*
 * Copyright (C) ngx_unico_selfie_module authors
 * SPDX-License-Identifier: BSD-2-Clause
 *
 * Service accounts: the RS256 JWT bearer assertion exchanged at Unico's
 * token endpoint through an internal location, and the access token kept
 * in shared memory for every worker.
 *
 * One slot per account in the "unico_selfie_tokens" zone holds the token,
 * its expiry, and who is refreshing it.  One refresh at a time across all
 * workers: the slot is marked busy under the zone's mutex, with the pid of
 * the worker refreshing (a mark whose worker died is taken over, not waited
 * out).  A request that finds a valid token uses it, and if the refresh
 * time has come starts a background refresh; a request that finds none
 * either refreshes (and waits for its own token subrequest) or polls the
 * slot with a timer until another worker's refresh lands.  Failures back
 * off exponentially, so the gateway never hammers the endpoint into
 * locking the account (1.2.18).
 */


#include <ngx_config.h>
#include <ngx_core.h>
#include <ngx_http.h>

#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/err.h>

#include "ngx_http_unico_selfie.h"
#include "unico_selfie_jwt.h"


#define NGX_HTTP_UNICO_ACCOUNTS_MAX    8
#define NGX_HTTP_UNICO_ZONE_SIZE       (128 * 1024)
#define NGX_HTTP_UNICO_POLL            20          /* ms */
#define NGX_HTTP_UNICO_JWT_LIFETIME    600         /* s, at least */
#define NGX_HTTP_UNICO_JWT_SPREAD      3000        /* s, + lifetime < 3600 */
#define NGX_HTTP_UNICO_BACKOFF_MAX     64          /* s */
#define NGX_HTTP_UNICO_TOKEN_BODY_MAX  16384


struct ngx_http_unico_selfie_account_s {
    ngx_str_t                  name;
    ngx_str_t                  key_file;
    EVP_PKEY                  *key;
    ngx_str_t                  issuer;
    ngx_str_t                  audience;
    ngx_str_t                  token_api;     /* <prefix>/oauth2/token */
    time_t                     refresh_ahead;
    ngx_msec_t                 wait;
    ngx_str_t                  instance;      /* this gateway, in a fleet */
    time_t                     lifetime;      /* of its assertions */
    time_t                     lock;          /* a refresh may take this */
    u_char                     fingerprint[32];
    ngx_uint_t                 slot;
    ngx_shm_zone_t            *zone;

    u_char                    *file;
    ngx_uint_t                 line;
};


typedef struct {
    u_char                     fingerprint[32];
    ngx_uint_t                 in_use;

    time_t                     expires;       /* of the token held */
    time_t                     refresh_at;
    time_t                     busy_until;    /* a refresh is under way */
    ngx_pid_t                  busy_pid;      /* in this worker */
    time_t                     retry_at;      /* backing off until */
    time_t                     last_iat;      /* no two assertions a second */
    ngx_uint_t                 refresh;       /* the busy mark's owner */
    ngx_uint_t                 failures;
    ngx_uint_t                 generation;

    size_t                     token_len;
    u_char                     token[UNICO_TOKEN_MAX];
} ngx_http_unico_selfie_slot_t;


typedef struct {
    ngx_http_unico_selfie_slot_t  slots[NGX_HTTP_UNICO_ACCOUNTS_MAX];

    /* token requests of every account, for the metrics page */
    ngx_atomic_t                  refreshes_ok;
    ngx_atomic_t                  refreshes_failed;
} ngx_http_unico_selfie_shctx_t;


typedef struct {
    ngx_array_t                accounts;      /* of account_t * */
    ngx_shm_zone_t            *zone;
    ngx_slab_pool_t           *shpool;
    ngx_http_unico_selfie_shctx_t  *sh;
} ngx_http_unico_selfie_accounts_t;


/* one token request, owned by the account's busy mark */

typedef struct {
    ngx_http_unico_selfie_fetch_t     fetch;
    ngx_http_unico_selfie_account_t  *account;
    ngx_uint_t                        refresh;   /* its number */
    ngx_http_unico_selfie_ctx_t      *ctx;       /* the request waiting */
} ngx_http_unico_selfie_refresh_t;


static ngx_str_t  ngx_http_unico_selfie_tokens_zone =
    ngx_string("unico_selfie_tokens");


static ngx_http_unico_selfie_accounts_t *ngx_http_unico_selfie_accounts(
    ngx_cycle_t *cycle);
static char *ngx_http_unico_selfie_account_line(ngx_conf_t *cf,
    ngx_command_t *dummy, void *conf);
static char *ngx_http_unico_selfie_account_check(ngx_conf_t *cf,
    ngx_http_unico_selfie_account_t *acct);
static char *ngx_http_unico_selfie_load_key(ngx_conf_t *cf,
    ngx_http_unico_selfie_account_t *acct);
static void ngx_http_unico_selfie_free_key(void *data);
static int ngx_http_unico_selfie_no_passphrase(char *buf, int size,
    int rwflag, void *u);
static ngx_int_t ngx_http_unico_selfie_init_zone(ngx_shm_zone_t *shm_zone,
    void *data);
static ngx_http_unico_selfie_slot_t *ngx_http_unico_selfie_slot(
    ngx_http_unico_selfie_account_t *acct);
static ngx_int_t ngx_http_unico_selfie_refresh(ngx_http_request_t *r,
    ngx_http_unico_selfie_ctx_t *ctx, ngx_http_unico_selfie_account_t *acct,
    ngx_uint_t refresh, ngx_uint_t background);
static void ngx_http_unico_selfie_refresh_release(void *data);
static void ngx_http_unico_selfie_token_done(ngx_http_request_t *r,
    ngx_http_unico_selfie_fetch_t *f, ngx_int_t rc);
static void ngx_http_unico_selfie_token_store(ngx_http_request_t *r,
    ngx_http_unico_selfie_refresh_t *rf);
static void ngx_http_unico_selfie_token_unbusy(
    ngx_http_unico_selfie_account_t *acct, ngx_uint_t refresh);
static void ngx_http_unico_selfie_token_poll_stop(
    ngx_http_unico_selfie_ctx_t *ctx);
static void ngx_http_unico_selfie_backoff(ngx_http_unico_selfie_slot_t *slot,
    time_t now);


/*
 * The accounts of a configuration hang off its tokens zone, found in the
 * cycle's list of zones: nothing outlives a cycle that failed to load.
 */

static ngx_http_unico_selfie_accounts_t *
ngx_http_unico_selfie_accounts(ngx_cycle_t *cycle)
{
    ngx_uint_t        i;
    ngx_shm_zone_t   *zone;
    ngx_list_part_t  *part;

    part = &cycle->shared_memory.part;
    zone = part->elts;

    for (i = 0; /* void */ ; i++) {

        if (i >= part->nelts) {
            if (part->next == NULL) {
                return NULL;
            }

            part = part->next;
            zone = part->elts;
            i = 0;
        }

        if (zone[i].tag == &ngx_http_unico_selfie_module
            && zone[i].shm.name.len == ngx_http_unico_selfie_tokens_zone.len
            && ngx_strncmp(zone[i].shm.name.data,
                           ngx_http_unico_selfie_tokens_zone.data,
                           ngx_http_unico_selfie_tokens_zone.len)
               == 0)
        {
            return zone[i].data;
        }
    }
}


/* unico_selfie_service_account <name> { ... } */

char *
ngx_http_unico_selfie_service_account(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf)
{
    char                              *rv;
    ngx_str_t                         *value;
    ngx_uint_t                         i;
    ngx_conf_t                         save;
    ngx_http_unico_selfie_account_t   *acct, **pa;
    ngx_http_unico_selfie_accounts_t  *accts;

    value = cf->args->elts;

    accts = ngx_http_unico_selfie_accounts(cf->cycle);

    if (accts == NULL) {
        /* the first account of this configuration */

        accts = ngx_pcalloc(cf->pool,
                            sizeof(ngx_http_unico_selfie_accounts_t));
        if (accts == NULL) {
            return NGX_CONF_ERROR;
        }

        if (ngx_array_init(&accts->accounts, cf->pool, 2,
                           sizeof(ngx_http_unico_selfie_account_t *))
            != NGX_OK)
        {
            return NGX_CONF_ERROR;
        }

        accts->zone = ngx_shared_memory_add(cf,
                                        &ngx_http_unico_selfie_tokens_zone,
                                        NGX_HTTP_UNICO_ZONE_SIZE,
                                        &ngx_http_unico_selfie_module);
        if (accts->zone == NULL) {
            return NGX_CONF_ERROR;
        }

        accts->zone->init = ngx_http_unico_selfie_init_zone;
        accts->zone->data = accts;
    }

    pa = accts->accounts.elts;

    for (i = 0; i < accts->accounts.nelts; i++) {
        if (pa[i]->name.len == value[1].len
            && ngx_strncmp(pa[i]->name.data, value[1].data, value[1].len)
               == 0)
        {
            return "is duplicate";
        }
    }

    if (accts->accounts.nelts == NGX_HTTP_UNICO_ACCOUNTS_MAX) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "too many service accounts, at most %d",
                           NGX_HTTP_UNICO_ACCOUNTS_MAX);
        return NGX_CONF_ERROR;
    }

    acct = ngx_pcalloc(cf->pool, sizeof(ngx_http_unico_selfie_account_t));
    if (acct == NULL) {
        return NGX_CONF_ERROR;
    }

    acct->name = value[1];
    acct->refresh_ahead = NGX_CONF_UNSET;
    acct->wait = NGX_CONF_UNSET_MSEC;
    acct->zone = accts->zone;
    acct->slot = accts->accounts.nelts;
    acct->file = cf->conf_file->file.name.data;
    acct->line = cf->conf_file->line;

    pa = ngx_array_push(&accts->accounts);
    if (pa == NULL) {
        return NGX_CONF_ERROR;
    }

    *pa = acct;

    save = *cf;
    cf->handler = ngx_http_unico_selfie_account_line;
    cf->handler_conf = (char *) acct;

    rv = ngx_conf_parse(cf, NULL);

    *cf = save;

    if (rv != NGX_CONF_OK) {
        return rv;
    }

    return ngx_http_unico_selfie_account_check(cf, acct);
}


static char *
ngx_http_unico_selfie_account_line(ngx_conf_t *cf, ngx_command_t *dummy,
    void *conf)
{
    ngx_http_unico_selfie_account_t  *acct;

    ngx_str_t  *value, *field;
    time_t      t;
    ngx_msec_t  ms;

    acct = (ngx_http_unico_selfie_account_t *) cf->handler_conf;
    value = cf->args->elts;

    if (cf->args->nelts != 2) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "invalid number of arguments in \"%V\"",
                           &value[0]);
        return NGX_CONF_ERROR;
    }

    field = NULL;

    if (ngx_strcmp(value[0].data, "key_file") == 0) {
        field = &acct->key_file;

    } else if (ngx_strcmp(value[0].data, "issuer") == 0) {
        field = &acct->issuer;

    } else if (ngx_strcmp(value[0].data, "token_api") == 0) {
        field = &acct->token_api;

    } else if (ngx_strcmp(value[0].data, "audience") == 0) {
        field = &acct->audience;

    } else if (ngx_strcmp(value[0].data, "instance") == 0) {
        field = &acct->instance;

    } else if (ngx_strcmp(value[0].data, "environment") == 0) {

        if (acct->audience.data) {
            return "is duplicate";
        }

        if (ngx_strcmp(value[1].data, "production") == 0) {
            ngx_str_set(&acct->audience, "https://identity.acesso.io");

        } else if (ngx_strcmp(value[1].data, "sandbox") == 0) {
            ngx_str_set(&acct->audience, "https://identityhomolog.acesso.io");

        } else {
            ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                               "\"environment\" must be \"production\" or "
                               "\"sandbox\", not \"%V\"", &value[1]);
            return NGX_CONF_ERROR;
        }

        return NGX_CONF_OK;

    } else if (ngx_strcmp(value[0].data, "refresh_ahead") == 0) {
        t = ngx_parse_time(&value[1], 1);
        if (t == (time_t) NGX_ERROR) {
            ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                               "invalid \"refresh_ahead\" \"%V\"", &value[1]);
            return NGX_CONF_ERROR;
        }

        acct->refresh_ahead = t;
        return NGX_CONF_OK;

    } else if (ngx_strcmp(value[0].data, "wait") == 0) {
        ms = ngx_parse_time(&value[1], 0);
        if (ms == (ngx_msec_t) NGX_ERROR || ms == 0) {
            ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                               "invalid \"wait\" \"%V\"", &value[1]);
            return NGX_CONF_ERROR;
        }

        acct->wait = ms;
        return NGX_CONF_OK;

    } else {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "unknown service account setting \"%V\"",
                           &value[0]);
        return NGX_CONF_ERROR;
    }

    if (field->data) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0, "\"%V\" is duplicate",
                           &value[0]);
        return NGX_CONF_ERROR;
    }

    *field = value[1];

    return NGX_CONF_OK;
}


static char *
ngx_http_unico_selfie_account_check(ngx_conf_t *cf,
    ngx_http_unico_selfie_account_t *acct)
{
    u_char             *p;
    ngx_str_t          *api;
    EVP_MD_CTX         *md;
    unsigned int        len;
    unsigned char      *der;
    int                 der_len;

    static const char  *missing[] = { "key_file", "issuer", "token_api" };
    ngx_str_t          *fields[3];
    ngx_uint_t          i;

    fields[0] = &acct->key_file;
    fields[1] = &acct->issuer;
    fields[2] = &acct->token_api;

    for (i = 0; i < 3; i++) {
        if (fields[i]->data == NULL) {
            ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                               "service account \"%V\" has no \"%s\"",
                               &acct->name, missing[i]);
            return NGX_CONF_ERROR;
        }
    }

    if (acct->audience.data == NULL) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "service account \"%V\" needs \"environment "
                           "sandbox|production\" (or \"audience\")",
                           &acct->name);
        return NGX_CONF_ERROR;
    }

    /* <account>@<tenant>.iam.acesso.io, written unescaped into the JWT */

    p = ngx_strlchr(acct->issuer.data, acct->issuer.data + acct->issuer.len,
                    '@');

    if (p == NULL || p == acct->issuer.data
        || acct->issuer.len > 256
        || !unico_jwt_claim_valid((char *) acct->issuer.data,
                                  acct->issuer.len)
        || ngx_strlchr(p + 1, acct->issuer.data + acct->issuer.len, '@')
        || acct->issuer.len - (p + 1 - acct->issuer.data)
           <= sizeof(".iam.acesso.io") - 1
        || ngx_strncmp(acct->issuer.data + acct->issuer.len
                       - (sizeof(".iam.acesso.io") - 1),
                       ".iam.acesso.io", sizeof(".iam.acesso.io") - 1)
           != 0)
    {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "service account \"%V\": invalid issuer \"%V\", "
                           "expected <account>@<tenant>.iam.acesso.io",
                           &acct->name, &acct->issuer);
        return NGX_CONF_ERROR;
    }

    if (acct->audience.len > 256
        || !unico_jwt_claim_valid((char *) acct->audience.data,
                                  acct->audience.len))
    {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "service account \"%V\": invalid audience \"%V\"",
                           &acct->name, &acct->audience);
        return NGX_CONF_ERROR;
    }

    api = &acct->token_api;

    if (api->data[0] != '/') {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "service account \"%V\": \"token_api\" must be a "
                           "URI prefix that starts with \"/\"", &acct->name);
        return NGX_CONF_ERROR;
    }

    while (api->len > 1 && api->data[api->len - 1] == '/') {
        api->len--;
    }

    p = ngx_pnalloc(cf->pool, api->len + sizeof("/oauth2/token") - 1);
    if (p == NULL) {
        return NGX_CONF_ERROR;
    }

    api->len = ngx_sprintf(p, "%V/oauth2/token", api) - p;
    api->data = p;

    ngx_conf_init_value(acct->refresh_ahead, 600);
    ngx_conf_init_msec_value(acct->wait, 10000);

    /*
     * Unico accepts an assertion once, and RS256 over the same claims
     * gives the same assertion: two gateways of a fleet that refresh in
     * the same second would collide.  Their assertions differ by "exp",
     * whose distance from "iat" is derived from the gateway's name (its
     * hostname, or "instance" where hosts share one): 600 to 3599 s,
     * within Unico's hour.
     */

    if (acct->instance.data == NULL) {
        acct->instance = cf->cycle->hostname;
    }

    acct->lifetime = NGX_HTTP_UNICO_JWT_LIFETIME
                     + ngx_crc32_long(acct->instance.data, acct->instance.len)
                       % NGX_HTTP_UNICO_JWT_SPREAD;

    /* a refresh that never reports back frees the slot after this */
    acct->lock = (time_t) (acct->wait / 1000) + 5;

    if (ngx_http_unico_selfie_load_key(cf, acct) != NGX_CONF_OK) {
        return NGX_CONF_ERROR;
    }

    /*
     * The slot that survives a reload: the same issuer, audience and key
     * keep their token.
     */

    der = NULL;
    der_len = i2d_PUBKEY(acct->key, &der);
    if (der_len <= 0) {
        return NGX_CONF_ERROR;
    }

    md = EVP_MD_CTX_new();
    if (md == NULL) {
        OPENSSL_free(der);
        return NGX_CONF_ERROR;
    }

    len = 0;

    if (EVP_DigestInit_ex(md, EVP_sha256(), NULL) != 1
        || EVP_DigestUpdate(md, acct->issuer.data, acct->issuer.len) != 1
        || EVP_DigestUpdate(md, "\n", 1) != 1
        || EVP_DigestUpdate(md, acct->audience.data, acct->audience.len)
           != 1
        || EVP_DigestUpdate(md, "\n", 1) != 1
        || EVP_DigestUpdate(md, der, der_len) != 1
        || EVP_DigestFinal_ex(md, acct->fingerprint, &len) != 1)
    {
        EVP_MD_CTX_free(md);
        OPENSSL_free(der);
        return NGX_CONF_ERROR;
    }

    EVP_MD_CTX_free(md);
    OPENSSL_free(der);

    return NGX_CONF_OK;
}


/*
 * The key is read when the configuration loads, as root before the workers
 * drop privileges; nothing of it is ever logged.
 */

static char *
ngx_http_unico_selfie_load_key(ngx_conf_t *cf,
    ngx_http_unico_selfie_account_t *acct)
{
    BIO                 *bio;
    char                *why;
    EVP_PKEY            *key;
    unsigned long        err;
    ngx_pool_cleanup_t  *cln;

    if (ngx_conf_full_name(cf->cycle, &acct->key_file, 1) != NGX_OK) {
        return NGX_CONF_ERROR;
    }

    bio = BIO_new_file((char *) acct->key_file.data, "r");
    if (bio == NULL) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, ngx_errno,
                           "service account \"%V\": cannot read key file "
                           "\"%V\"", &acct->name, &acct->key_file);
        ERR_clear_error();
        return NGX_CONF_ERROR;
    }

    key = PEM_read_bio_PrivateKey(bio, NULL,
                                  ngx_http_unico_selfie_no_passphrase, NULL);
    BIO_free(bio);

    if (key == NULL) {
        err = ERR_peek_last_error();
        ERR_clear_error();

        why = "not a PEM private key";

        if (ERR_GET_REASON(err) == PEM_R_BAD_PASSWORD_READ
            || ERR_GET_REASON(err) == PEM_R_PROBLEMS_GETTING_PASSWORD
            || ERR_GET_REASON(err) == EVP_R_BAD_DECRYPT)
        {
            why = "the key is protected by a passphrase, which is not "
                  "supported: decrypt it with \"openssl pkey\"";
        }

        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "service account \"%V\": key file \"%V\": %s",
                           &acct->name, &acct->key_file, why);
        return NGX_CONF_ERROR;
    }

    why = NULL;

    if (EVP_PKEY_get_base_id(key) != EVP_PKEY_RSA) {
        why = "not an RSA key (RS256 needs one)";

    } else if (EVP_PKEY_get_bits(key) < 2048) {
        why = "an RSA key shorter than 2048 bits";

    } else if (EVP_PKEY_get_bits(key) > UNICO_JWT_RSA_BITS_MAX) {
        why = "an RSA key longer than 8192 bits, which cannot sign an "
              "assertion";
    }

    if (why) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "service account \"%V\": key file \"%V\": %s",
                           &acct->name, &acct->key_file, why);
        EVP_PKEY_free(key);
        return NGX_CONF_ERROR;
    }

    cln = ngx_pool_cleanup_add(cf->pool, 0);
    if (cln == NULL) {
        EVP_PKEY_free(key);
        return NGX_CONF_ERROR;
    }

    cln->handler = ngx_http_unico_selfie_free_key;
    cln->data = key;

    acct->key = key;

    return NGX_CONF_OK;
}


static int
ngx_http_unico_selfie_no_passphrase(char *buf, int size, int rwflag, void *u)
{
    /* never prompt on the terminal: an encrypted key is refused */
    return -1;
}


static void
ngx_http_unico_selfie_free_key(void *data)
{
    EVP_PKEY_free(data);
}


/* unico_selfie_account <name>; */

char *
ngx_http_unico_selfie_account(ngx_conf_t *cf, ngx_command_t *cmd, void *conf)
{
    ngx_http_unico_selfie_loc_conf_t *uslcf = conf;

    ngx_str_t                         *value;
    ngx_uint_t                         i;
    ngx_http_unico_selfie_account_t  **pa;
    ngx_http_unico_selfie_accounts_t  *accts;

    if (uslcf->account != NGX_CONF_UNSET_PTR) {
        return "is duplicate";
    }

    value = cf->args->elts;

    if (ngx_strcmp(value[1].data, "off") == 0) {
        uslcf->account = NULL;
        return NGX_CONF_OK;
    }

    if (uslcf->token != NGX_CONF_UNSET_PTR) {
        return "cannot be used with \"unico_selfie_token\" on the same "
               "level";
    }

    accts = ngx_http_unico_selfie_accounts(cf->cycle);
    if (accts == NULL) {
        goto unknown;
    }

    pa = accts->accounts.elts;

    for (i = 0; i < accts->accounts.nelts; i++) {
        if (pa[i]->name.len == value[1].len
            && ngx_strncmp(pa[i]->name.data, value[1].data, value[1].len)
               == 0)
        {
            uslcf->account = pa[i];
            return NGX_CONF_OK;
        }
    }

unknown:

    ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                       "unknown service account \"%V\": declare it first "
                       "with \"unico_selfie_service_account\" in http{}",
                       &value[1]);
    return NGX_CONF_ERROR;
}


static ngx_int_t
ngx_http_unico_selfie_init_zone(ngx_shm_zone_t *shm_zone, void *data)
{
    ngx_http_unico_selfie_accounts_t  *oaccts = data;

    ngx_slab_pool_t                   *shpool;
    ngx_http_unico_selfie_shctx_t     *sh;
    ngx_http_unico_selfie_accounts_t  *accts;

    accts = shm_zone->data;
    shpool = (ngx_slab_pool_t *) shm_zone->shm.addr;

    if (oaccts) {
        sh = oaccts->sh;

    } else if (shm_zone->shm.exists) {
        sh = shpool->data;

    } else {
        sh = ngx_slab_calloc(shpool, sizeof(ngx_http_unico_selfie_shctx_t));
        if (sh == NULL) {
            return NGX_ERROR;
        }

        shpool->data = sh;
    }

    accts->shpool = shpool;
    accts->sh = sh;

    /*
     * The slots are not touched here: a reload can still fail after the
     * zones are initialised (a listen socket that cannot be bound), and the
     * running workers keep using them.  They are given out once the new
     * configuration is committed, in ngx_http_unico_selfie_token_init().
     */

    return NGX_OK;
}


/*
 * init_module, when the new configuration can no longer fail: every account
 * gets its slot, the one with the same fingerprint when it had one (its
 * token survives the reload), else a slot no account of the configuration
 * uses; the slots of accounts gone from it are wiped.
 */

ngx_int_t
ngx_http_unico_selfie_token_init(ngx_cycle_t *cycle)
{
    ngx_uint_t                         i, j;
    ngx_slab_pool_t                   *shpool;
    ngx_http_unico_selfie_slot_t      *slot;
    ngx_http_unico_selfie_shctx_t     *sh;
    ngx_http_unico_selfie_account_t  **pa;
    ngx_http_unico_selfie_accounts_t  *accts;
    u_char                             used[NGX_HTTP_UNICO_ACCOUNTS_MAX];

    accts = ngx_http_unico_selfie_accounts(cycle);

    if (accts == NULL || accts->sh == NULL) {
        return NGX_OK;
    }

    sh = accts->sh;
    shpool = accts->shpool;

    ngx_memzero(used, sizeof(used));
    pa = accts->accounts.elts;

    ngx_shmtx_lock(&shpool->mutex);

    for (i = 0; i < accts->accounts.nelts; i++) {
        pa[i]->slot = NGX_HTTP_UNICO_ACCOUNTS_MAX;

        for (j = 0; j < NGX_HTTP_UNICO_ACCOUNTS_MAX; j++) {
            if (sh->slots[j].in_use && !used[j]
                && ngx_memcmp(sh->slots[j].fingerprint, pa[i]->fingerprint,
                              32) == 0)
            {
                pa[i]->slot = j;
                used[j] = 1;
                break;
            }
        }
    }

    for (i = 0; i < accts->accounts.nelts; i++) {
        if (pa[i]->slot != NGX_HTTP_UNICO_ACCOUNTS_MAX) {
            continue;
        }

        for (j = 0; j < NGX_HTTP_UNICO_ACCOUNTS_MAX; j++) {
            if (!used[j]) {
                break;
            }
        }

        slot = &sh->slots[j];
        ngx_explicit_memzero(slot, sizeof(ngx_http_unico_selfie_slot_t));
        ngx_memcpy(slot->fingerprint, pa[i]->fingerprint, 32);
        slot->in_use = 1;

        pa[i]->slot = j;
        used[j] = 1;
    }

    /* accounts gone from the configuration lose their tokens */

    for (j = 0; j < NGX_HTTP_UNICO_ACCOUNTS_MAX; j++) {
        if (!used[j]) {
            ngx_explicit_memzero(&sh->slots[j],
                                 sizeof(ngx_http_unico_selfie_slot_t));
        }
    }

    ngx_shmtx_unlock(&shpool->mutex);

    return NGX_OK;
}


/* the token requests made and failed, for the metrics page */

void
ngx_http_unico_selfie_token_counts(ngx_cycle_t *cycle, ngx_atomic_uint_t *ok,
    ngx_atomic_uint_t *failed)
{
    ngx_http_unico_selfie_accounts_t  *accts;

    accts = ngx_http_unico_selfie_accounts(cycle);

    if (accts == NULL || accts->sh == NULL) {
        *ok = 0;
        *failed = 0;
        return;
    }

    *ok = accts->sh->refreshes_ok;
    *failed = accts->sh->refreshes_failed;
}


/* what identifies the account's credentials: the key's fingerprint */

void
ngx_http_unico_selfie_account_id(ngx_http_unico_selfie_account_t *acct,
    ngx_str_t *id)
{
    id->data = acct->fingerprint;
    id->len = sizeof(acct->fingerprint);
}


/* the account's slot, or NULL when the zone no longer holds it */

static ngx_http_unico_selfie_slot_t *
ngx_http_unico_selfie_slot(ngx_http_unico_selfie_account_t *acct)
{
    ngx_http_unico_selfie_slot_t      *slot;
    ngx_http_unico_selfie_accounts_t  *accts;

    accts = acct->zone->data;
    slot = &accts->sh->slots[acct->slot];

    if (!slot->in_use
        || ngx_memcmp(slot->fingerprint, acct->fingerprint, 32) != 0)
    {
        return NULL;
    }

    return slot;
}


/*
 * The token stage: NGX_OK with ctx->authorization set; NGX_AGAIN while the
 * request waits (for its own token request, or polling the slot while
 * another request's refresh runs); NGX_DONE with ctx->outcome.
 */

ngx_int_t
ngx_http_unico_selfie_token_stage(ngx_http_request_t *r,
    ngx_http_unico_selfie_ctx_t *ctx)
{
    u_char                            *p;
    time_t                             now;
    ngx_uint_t                         refresh, background;
    ngx_slab_pool_t                   *shpool;
    ngx_http_unico_selfie_slot_t      *slot;
    ngx_http_unico_selfie_account_t   *acct;
    ngx_http_unico_selfie_loc_conf_t  *uslcf;

    uslcf = ngx_http_get_module_loc_conf(r, ngx_http_unico_selfie_module);
    acct = uslcf->account;

    if (acct == NULL || ctx->authorization.len) {
        return NGX_OK;
    }

    ctx->account = acct;
    shpool = (ngx_slab_pool_t *) acct->zone->shm.addr;

    now = ngx_time();
    refresh = 0;
    background = 0;

    ngx_shmtx_lock(&shpool->mutex);

    slot = ngx_http_unico_selfie_slot(acct);
    if (slot == NULL) {
        ngx_shmtx_unlock(&shpool->mutex);
        ctx->outcome = NGX_HTTP_UNICO_INTERNAL;
        return NGX_DONE;
    }

    if (slot->busy_until > now
        && ngx_http_unico_selfie_worker_gone(slot->busy_pid))
    {
        ngx_log_error(NGX_LOG_WARN, r->connection->log, 0,
                      "unico selfie: service account \"%V\": the token "
                      "refresh of worker %P was lost with that worker",
                      &acct->name, slot->busy_pid);

        slot->busy_until = 0;
    }

    if (slot->token_len && now < slot->expires) {

        /* a token held: use it, refreshing ahead of its expiry */

        p = ngx_pnalloc(r->pool, sizeof("Bearer ") - 1 + slot->token_len);
        if (p == NULL) {
            ngx_shmtx_unlock(&shpool->mutex);
            ctx->outcome = NGX_HTTP_UNICO_INTERNAL;
            return NGX_DONE;
        }

        ctx->authorization.data = p;
        ctx->authorization.len = ngx_cpymem(ngx_cpymem(p, "Bearer ", 7),
                                            slot->token, slot->token_len)
                                 - p;
        ctx->generation = slot->generation;

        if (now >= slot->refresh_at && slot->busy_until <= now
            && now >= slot->retry_at && now > slot->last_iat)
        {
            slot->busy_until = now + acct->lock;
            slot->busy_pid = ngx_pid;
            slot->last_iat = now;
            refresh = ++slot->refresh;
            background = 1;
        }

    } else if (slot->busy_until <= now && now >= slot->retry_at
               && now > slot->last_iat)
    {
        /* none: this request refreshes it */

        slot->busy_until = now + acct->lock;
        slot->busy_pid = ngx_pid;
        slot->last_iat = now;
        refresh = ++slot->refresh;

    } else if (slot->busy_until <= now && now < slot->retry_at) {

        /* the endpoint failed lately: no attempt until the back-off ends */

        ngx_shmtx_unlock(&shpool->mutex);
        ctx->outcome = ctx->refreshing ? NGX_HTTP_UNICO_TOKEN_FAILED
                                       : NGX_HTTP_UNICO_TOKEN_UNAVAILABLE;
        return NGX_DONE;
    }

    ngx_shmtx_unlock(&shpool->mutex);

    if (refresh) {
        ngx_http_unico_selfie_token_poll_stop(ctx);

        if (ngx_http_unico_selfie_refresh(r, ctx, acct, refresh, background)
            != NGX_OK)
        {
            ngx_http_unico_selfie_token_unbusy(acct, refresh);

            if (!background) {
                ctx->outcome = NGX_HTTP_UNICO_INTERNAL;
                return NGX_DONE;
            }
        }

        if (!background) {
            ctx->token_fresh = 1;
            ctx->refreshing = 1;
            return NGX_AGAIN;
        }

        return NGX_OK;
    }

    if (ctx->authorization.len) {
        ngx_http_unico_selfie_token_poll_stop(ctx);
        return NGX_OK;
    }

    /* another request refreshes: poll for its token */

    if (!ctx->token_polling) {
        ctx->token_polling = 1;
        ctx->token_wait = ngx_current_msec;
        ctx->token_fresh = 1;

        ctx->token_ev.handler = ngx_http_unico_selfie_wake;
        ctx->token_ev.data = r;
        ctx->token_ev.log = r->connection->log;

    } else if (ngx_current_msec - ctx->token_wait >= acct->wait) {
        ngx_http_unico_selfie_token_poll_stop(ctx);
        ctx->outcome = NGX_HTTP_UNICO_TOKEN_TIMEOUT;
        return NGX_DONE;
    }

    ngx_add_timer(&ctx->token_ev, NGX_HTTP_UNICO_POLL);

    return NGX_AGAIN;
}


static void
ngx_http_unico_selfie_token_poll_stop(ngx_http_unico_selfie_ctx_t *ctx)
{
    ctx->token_polling = 0;

    if (ctx->token_ev.timer_set) {
        ngx_del_timer(&ctx->token_ev);
    }
}


/* Mints an assertion and sends it to the token endpoint. */

static ngx_int_t
ngx_http_unico_selfie_refresh(ngx_http_request_t *r,
    ngx_http_unico_selfie_ctx_t *ctx, ngx_http_unico_selfie_account_t *acct,
    ngx_uint_t refresh, ngx_uint_t background)
{
    u_char                           *p;
    size_t                            max;
    ngx_uint_t                        flags;
    unico_jwt_claims_t                claims;
    ngx_pool_cleanup_t               *cln;
    ngx_http_unico_selfie_fetch_t    *f;
    ngx_http_unico_selfie_refresh_t  *rf;

    static u_char  grant[] = "grant_type=urn%3Aietf%3Aparams%3Aoauth%3A"
                             "grant-type%3Ajwt-bearer&assertion=";

    claims.iss = (char *) acct->issuer.data;
    claims.iss_len = acct->issuer.len;
    claims.aud = (char *) acct->audience.data;
    claims.aud_len = acct->audience.len;
    claims.iat = ngx_time();
    claims.exp = claims.iat + acct->lifetime;

    max = unico_jwt_max_len(&claims, acct->key);
    if (max == 0) {
        return NGX_ERROR;
    }

    rf = ngx_pcalloc(r->pool, sizeof(ngx_http_unico_selfie_refresh_t));
    if (rf == NULL) {
        return NGX_ERROR;
    }

    f = &rf->fetch;

    f->form.data = ngx_pnalloc(r->pool, sizeof(grant) - 1 + max);
    if (f->form.data == NULL) {
        return NGX_ERROR;
    }

    p = ngx_cpymem(f->form.data, grant, sizeof(grant) - 1);

    max = unico_jwt_sign(&claims, acct->key, p, max);
    if (max == 0) {
        ngx_log_error(NGX_LOG_ERR, r->connection->log, 0,
                      "unico selfie: service account \"%V\": signing the "
                      "assertion failed", &acct->name);
        ERR_clear_error();
        return NGX_ERROR;
    }

    f->form.len = sizeof(grant) - 1 + max;
    f->body_max = NGX_HTTP_UNICO_TOKEN_BODY_MAX;
    f->error_body = 1;
    f->handler = ngx_http_unico_selfie_token_done;
    f->data = rf;

    rf->account = acct;
    rf->refresh = refresh;
    rf->ctx = background ? NULL : ctx;   /* the request waits for it */

    /*
     * The refresh owns the busy mark until its answer is stored; should
     * the request that carries it end first (its client gone, the worker
     * shutting down), the mark is released at once, as no failure.
     */

    cln = ngx_pool_cleanup_add(r->pool, 0);
    if (cln == NULL) {
        return NGX_ERROR;
    }

    cln->handler = ngx_http_unico_selfie_refresh_release;
    cln->data = rf;

    flags = background ? NGX_HTTP_SUBREQUEST_BACKGROUND
                       : NGX_HTTP_SUBREQUEST_WAITED;

    if (ngx_http_unico_selfie_fetch(r, f, &acct->token_api, flags) != NGX_OK) {
        return NGX_ERROR;
    }

    ngx_log_error(NGX_LOG_INFO, r->connection->log, 0,
                  "unico selfie: service account \"%V\": requesting a "
                  "token%s", &acct->name,
                  background ? " ahead of expiry" : "");

    return NGX_OK;
}


/* a token request has ended: r is the request that carried it */

static void
ngx_http_unico_selfie_token_done(ngx_http_request_t *r,
    ngx_http_unico_selfie_fetch_t *f, ngx_int_t rc)
{
    ngx_http_unico_selfie_refresh_t  *rf = f->data;

    if (f->aborted && !(f->status && f->last)) {

        /*
         * The client of the request that carried the refresh left before
         * the answer (a token location without proxy_ignore_client_abort):
         * not a failure of the endpoint.  The mark goes, another request
         * refreshes.
         */

        ngx_log_error(NGX_LOG_INFO, r->connection->log, 0,
                      "unico selfie: service account \"%V\": token request "
                      "abandoned, the client closed the connection",
                      &rf->account->name);

        ngx_http_unico_selfie_token_unbusy(rf->account, rf->refresh);

        if (rf->ctx) {
            rf->ctx->outcome = NGX_HTTP_UNICO_CLIENT_CLOSED;
            ngx_http_unico_selfie_outcome_log(r, rf->ctx);
        }

        return;
    }

    ngx_http_unico_selfie_token_store(r, rf);

    if (rf->ctx) {
        /* nginx posts the request once the subrequest is finalized */
        rf->ctx->waiting = 0;
        r->write_event_handler = ngx_http_core_run_phases;
    }
}


/* Records the outcome of a refresh in the slot, and logs a failure once. */

static void
ngx_http_unico_selfie_token_store(ngx_http_request_t *r,
    ngx_http_unico_selfie_refresh_t *rf)
{
    time_t                             now, ahead;
    ngx_uint_t                         owner;
    const char                        *why;
    ngx_slab_pool_t                   *shpool;
    unico_token_rc_e                   trc;
    unico_token_response_t            *resp;
    ngx_http_unico_selfie_slot_t      *slot;
    ngx_http_unico_selfie_fetch_t     *f;
    ngx_http_unico_selfie_account_t   *acct;
    ngx_http_unico_selfie_accounts_t  *accts;

    f = &rf->fetch;
    acct = rf->account;
    why = NULL;
    trc = UNICO_TOKEN_OK;

    resp = ngx_palloc(r->pool, sizeof(unico_token_response_t));
    if (resp == NULL) {
        why = "no memory";

    } else if (f->status == 0) {
        why = f->timed_out ? "timed out" : "could not be reached";

    } else if (!f->last || f->outcome != NGX_HTTP_UNICO_OK) {
        why = "sent an incomplete or oversized answer";

    } else {
        trc = unico_token_parse(f->body, f->body_len, resp);

        if (trc == UNICO_TOKEN_OK && f->status != NGX_HTTP_OK) {
            trc = UNICO_TOKEN_ERROR;
        }

        if (trc != UNICO_TOKEN_OK) {
            why = unico_token_strerror(trc);
        }
    }

    if (f->body) {
        ngx_explicit_memzero(f->body, f->body_len);
    }

    now = ngx_time();
    shpool = (ngx_slab_pool_t *) acct->zone->shm.addr;

    ngx_shmtx_lock(&shpool->mutex);

    slot = ngx_http_unico_selfie_slot(acct);

    if (slot == NULL) {
        ngx_shmtx_unlock(&shpool->mutex);
        goto done;
    }

    /* a refresh that outlived its mark leaves a newer one's alone */

    owner = (slot->refresh == rf->refresh);

    if (owner) {
        slot->busy_until = 0;
    }

    if (why == NULL) {
        ngx_memcpy(slot->token, resp->token, resp->token_len);
        slot->token_len = resp->token_len;
        slot->expires = now + resp->expires_in;

        /* ahead by refresh_ahead, or half the lifetime when it is shorter */

        ahead = ngx_min(acct->refresh_ahead, resp->expires_in / 2);
        slot->refresh_at = slot->expires - ahead;
        slot->failures = 0;
        slot->retry_at = 0;
        slot->generation++;

    } else if (owner) {
        ngx_http_unico_selfie_backoff(slot, now);
    }

    ngx_shmtx_unlock(&shpool->mutex);

    accts = acct->zone->data;

    (void) ngx_atomic_fetch_add(why == NULL ? &accts->sh->refreshes_ok
                                            : &accts->sh->refreshes_failed,
                                1);

    if (why == NULL) {
        ngx_log_error(NGX_LOG_INFO, r->connection->log, 0,
                      "unico selfie: service account \"%V\": new token, "
                      "expires in %L s", &acct->name,
                      (int64_t) resp->expires_in);

    } else if (trc == UNICO_TOKEN_ERROR && resp->error_code[0]) {
        ngx_log_error(NGX_LOG_ERR, r->connection->log, 0,
                      "unico selfie: service account \"%V\": the token "
                      "endpoint refused the assertion (status %ui, Unico "
                      "error %s)", &acct->name, f->status,
                      resp->error_code);

    } else {
        ngx_log_error(NGX_LOG_ERR, r->connection->log, 0,
                      "unico selfie: service account \"%V\": the token "
                      "endpoint %s (status %ui)", &acct->name, why,
                      f->status);
    }

done:

    if (resp) {
        ngx_explicit_memzero(resp, sizeof(unico_token_response_t));
    }
}


/* the busy mark of refresh number "refresh", if it still holds it */

static void
ngx_http_unico_selfie_token_unbusy(ngx_http_unico_selfie_account_t *acct,
    ngx_uint_t refresh)
{
    ngx_slab_pool_t               *shpool;
    ngx_http_unico_selfie_slot_t  *slot;

    shpool = (ngx_slab_pool_t *) acct->zone->shm.addr;

    ngx_shmtx_lock(&shpool->mutex);

    slot = ngx_http_unico_selfie_slot(acct);

    if (slot && slot->refresh == refresh) {
        slot->busy_until = 0;
    }

    ngx_shmtx_unlock(&shpool->mutex);
}


static void
ngx_http_unico_selfie_refresh_release(void *data)
{
    ngx_http_unico_selfie_refresh_t  *rf = data;

    if (!rf->fetch.done) {
        ngx_http_unico_selfie_token_unbusy(rf->account, rf->refresh);
    }
}


/* exponential, bounded: at least 1, 2, 4 ... 64 seconds */

static void
ngx_http_unico_selfie_backoff(ngx_http_unico_selfie_slot_t *slot, time_t now)
{
    time_t  delay;

    if (slot->failures < 16) {
        slot->failures++;
    }

    delay = (time_t) 1 << ngx_min(slot->failures - 1, 6);
    delay = ngx_min(delay, NGX_HTTP_UNICO_BACKOFF_MAX);

    /*
     * ngx_time() has a resolution of a second: one more makes the wait at
     * least "delay" seconds, not anything from 0 to "delay".
     */

    slot->retry_at = now + delay + 1;
}


/* Unico refused the token the request used: drop it unless already new. */

void
ngx_http_unico_selfie_token_reject(ngx_http_request_t *r,
    ngx_http_unico_selfie_ctx_t *ctx)
{
    ngx_slab_pool_t                  *shpool;
    ngx_http_unico_selfie_slot_t     *slot;
    ngx_http_unico_selfie_account_t  *acct;

    acct = ctx->account;
    shpool = (ngx_slab_pool_t *) acct->zone->shm.addr;

    ngx_shmtx_lock(&shpool->mutex);

    slot = ngx_http_unico_selfie_slot(acct);

    if (slot && slot->generation == ctx->generation && slot->token_len) {
        ngx_explicit_memzero(slot->token, slot->token_len);
        slot->token_len = 0;
        slot->expires = 0;
    }

    ngx_shmtx_unlock(&shpool->mutex);
}


void
ngx_http_unico_selfie_token_cleanup(ngx_http_unico_selfie_ctx_t *ctx)
{
    if (ctx->token_ev.timer_set) {
        ngx_del_timer(&ctx->token_ev);
    }
}
