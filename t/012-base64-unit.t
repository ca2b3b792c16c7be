#!/usr/bin/perl

# Copyright (C) ngx_unico_selfie_module authors
#
# Builds t/unit/test_base64.c with unico_selfie_base64.c, under
# AddressSanitizer and UndefinedBehaviorSanitizer when the compiler has
# them, and runs it: RFC 4648's vectors, and the SSSE3 and AVX2 decoders
# against the scalar one at every length, alignment and bad byte.  The
# program prints TAP itself.
#
#     prove -v t/012-base64-unit.t
#
# CC picks the compiler (default: cc).

use strict;
use warnings;

use FindBin;
use lib "$FindBin::Bin/lib";

use UnitBuild;

UnitBuild::run(
    test    => 't/unit/test_base64.c',
    sources => ['ngx_unico_selfie_module/unico_selfie_base64.c'],
);
