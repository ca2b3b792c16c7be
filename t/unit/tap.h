
/*
 * Copyright (C) ngx_unico_selfie_module authors
 * SPDX-License-Identifier: BSD-2-Clause
 *
 * The little TAP the unit-test programs share: ok() prints one test line,
 * diag() a comment, die() bails out; main() prints the plan at the end.
 */


#ifndef _UNICO_TAP_H_INCLUDED_
#define _UNICO_TAP_H_INCLUDED_


#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>


static unsigned  tests;
static unsigned  failed;


static inline void
die(const char *what)
{
    printf("Bail out! %s\n", what);
    exit(2);
}


static inline int
ok(int cond, const char *fmt, ...)
{
    va_list  args;

    tests++;

    if (!cond) {
        failed++;
        printf("not ");
    }

    printf("ok %u - ", tests);

    va_start(args, fmt);
    vprintf(fmt, args);
    va_end(args);

    printf("\n");
    fflush(stdout);

    return cond;
}


static inline void
diag(const char *fmt, ...)
{
    va_list  args;

    printf("# ");

    va_start(args, fmt);
    vprintf(fmt, args);
    va_end(args);

    printf("\n");
}


static inline void *
xmalloc(size_t size)
{
    void  *p;

    p = malloc(size ? size : 1);
    if (p == NULL) {
        die("out of memory");
    }

    return p;
}


#endif /* _UNICO_TAP_H_INCLUDED_ */
