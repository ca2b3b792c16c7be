
/*
 * Copyright (C) ngx_unico_selfie_module authors
 * SPDX-License-Identifier: BSD-2-Clause
 *
 * The module's version: the Debian package's upstream version
 * (debian/changelog) and the CHANGES file follow it.
 */


#ifndef _NGX_HTTP_UNICO_SELFIE_VERSION_H_INCLUDED_
#define _NGX_HTTP_UNICO_SELFIE_VERSION_H_INCLUDED_


#define NGX_HTTP_UNICO_SELFIE_VERSION  "0.3.0"


#endif /* _NGX_HTTP_UNICO_SELFIE_VERSION_H_INCLUDED_ */
