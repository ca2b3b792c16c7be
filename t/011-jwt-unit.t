#!/usr/bin/perl

# Copyright (C) ngx_unico_selfie_module authors
#
# Builds t/unit/test_jwt.c with the service-account core
# (unico_selfie_jwt.c), under AddressSanitizer and UndefinedBehaviorSanitizer
# when the compiler has them, and runs it: RS256 assertions checked against
# OpenSSL, the b64token check, and the token endpoint's answers.  The program
# prints TAP itself; its output goes straight to prove.  A failed compile is
# a failed test.
#
#     prove -v t/011-jwt-unit.t
#
# CC picks the compiler (default: cc).

use strict;
use warnings;

use FindBin;
use lib "$FindBin::Bin/lib";

use UnitBuild;

UnitBuild::run(
    test    => 't/unit/test_jwt.c',
    sources => ['ngx_unico_selfie_module/unico_selfie_jwt.c',
                'ngx_unico_selfie_module/unico_selfie_base64.c'],
    libs    => ['-lyajl', '-lcrypto'],
);
