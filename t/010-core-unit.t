#!/usr/bin/perl

# Copyright (C) ngx_unico_selfie_module authors
#
# Builds t/unit/test_payload.c with the pure core, under AddressSanitizer
# and UndefinedBehaviorSanitizer when the compiler has them, and runs it on
# t/fixtures.  The program prints TAP itself; its output goes straight to
# prove.  A failed compile is a failed test.
#
#     prove -v t/010-core-unit.t
#
# CC picks the compiler (default: cc).

use strict;
use warnings;

use FindBin;
use lib "$FindBin::Bin/lib";

use UnitBuild;

UnitBuild::run(
    test    => 't/unit/test_payload.c',
    sources => ['ngx_unico_selfie_module/unico_selfie_payload.c',
                'ngx_unico_selfie_module/unico_selfie_base64.c'],
    libs    => ['-lyajl'],
    args    => [UnitBuild::path('t/fixtures')],
);
