# The headers the module adds are where nginx looks for them, on every
# nginx line: since 1.23.0 nginx links repeated headers through
# ngx_table_elt_t.next and keeps Cache-Control as such a list in
# r->headers_out (an array of pointers before).  So "expires" replaces the
# module's Cache-Control instead of adding a second one, "add_header
# Cache-Control" adds to it, and $sent_http_cache_control, $sent_http_etag
# and the other $sent_http_* variables log what the client got
# (docs/deployment.md, "Cache-Control, expires and add_header").

use strict;
use warnings;

use FindBin;
use lib "$FindBin::Bin/lib";

use Test::More;
use UnicoTest;

my $t = UnicoTest->new;
$t->start_mock;

sub extra_location {
    my ($prefix, $directives) = @_;
    return <<"CONF";
        location ~ ^/$prefix/(?<${prefix}_process>[^/]+)\$ {
            unico_selfie        \$${prefix}_process;
            unico_selfie_api    /_unico_api;
            unico_selfie_token  test-token-2b7e1516.28aed2a6;
            $directives
        }
CONF
}

$t->start_nginx($t->selfie_conf(
    http   => q{log_format  headers
                     '$status $uri cc="$sent_http_cache_control" '
                     'etag="$sent_http_etag" '
                     'nosniff="$sent_http_x_content_type_options" '
                     'retry="$sent_http_retry_after" x="$sent_http_x_extra"';},
    server => "access_log  %%DIR%%/logs/headers.log headers;\n"
              . extra_location('expires', 'expires 1h;')
              . extra_location('add', 'add_header Cache-Control '
                                      . 'no-transform; '
                                      . 'add_header X-Extra yes;')
              . extra_location('both', 'expires 1h; '
                                       . 'add_header Cache-Control '
                                       . 'no-transform;')
              . extra_location('nocc', 'unico_selfie_cache_control off; '
                                       . 'expires 1h;'),
));

my $id = $t->id('jpeg-small');

# every Cache-Control line of a response, in order
sub cache_control {
    my ($r) = @_;
    return [ $r->{head} =~ /^Cache-Control:[ \t]*([^\r\n]*?)[ \t]*\r?$/mig ];
}

# the headers.log line of a URI, once nginx has written it
sub log_line {
    my ($uri, $status) = @_;
    my $line;
    $t->eventually(sub {
        ($line) = grep { index($_, "$status $uri ") == 0 }
                  split /\n/, $t->slurp($t->dir . '/logs/headers.log');
        defined $line;
    });
    return $line // '';
}

# the module's own Cache-Control

my $r = $t->get("/selfies/$id");
my $etag = $r->{headers}{etag} // '';

is($r->{status}, 200, 'default: 200');
is_deeply(cache_control($r), ['private, no-store'],
          'default: one Cache-Control, private, no-store');
like($etag, qr/^"[0-9a-f]{16}"$/, 'default: an ETag');

# the access log escapes the quotes of the ETag
(my $logged = $etag) =~ s/"/\\x22/g;

my $line = log_line("/selfies/$id", 200);
like($line, qr/ cc="private, no-store" /,
     'default: $sent_http_cache_control logs it');
like($line, qr/ etag="\Q$logged\E" /, 'default: $sent_http_etag logs the ETag');
like($line, qr/ nosniff="nosniff" /,
     'default: $sent_http_x_content_type_options logs nosniff');

# expires 1h: replaces it

$r = $t->get("/expires/$id");
is($r->{status}, 200, 'expires 1h: 200');
is_deeply(cache_control($r), ['max-age=3600'],
          'expires 1h: exactly one Cache-Control, max-age=3600');
is(scalar(() = $r->{head} =~ /^Expires:/mig), 1,
   'expires 1h: one Expires');
is($r->{headers}{etag}, $etag, 'expires 1h: the ETag stays');
like(log_line("/expires/$id", 200), qr/ cc="max-age=3600" etag="\Q$logged\E" /,
     'expires 1h: the log has what the client got');

# and on a 304
$r = $t->get("/expires/$id", headers => { 'If-None-Match' => $etag });
is($r->{status}, 304, 'expires 1h, If-None-Match: 304');
is_deeply(cache_control($r), ['max-age=3600'],
          'expires 1h, 304: exactly one Cache-Control');

# add_header: one more line after the module's

$r = $t->get("/add/$id");
is($r->{status}, 200, 'add_header: 200');
is_deeply(cache_control($r), ['private, no-store', 'no-transform'],
          'add_header Cache-Control: added after the module\'s');
is($r->{headers}{'x-extra'}, 'yes', 'add_header X-Extra: there');
like(log_line("/add/$id", 200),
     qr/ cc="private, no-store, no-transform" etag="\Q$logged\E" .* x="yes"$/,
     'add_header: $sent_http_cache_control logs both values');

# expires and add_header

$r = $t->get("/both/$id");
is_deeply(cache_control($r), ['max-age=3600', 'no-transform'],
          'expires and add_header: expires replaces, add_header adds');
like(log_line("/both/$id", 200), qr/ cc="max-age=3600, no-transform" /,
     'expires and add_header: logged');

# unico_selfie_cache_control off: expires alone

$r = $t->get("/nocc/$id");
is_deeply(cache_control($r), ['max-age=3600'],
          'unico_selfie_cache_control off and expires 1h: expires\' one');
like(log_line("/nocc/$id", 200), qr/ cc="max-age=3600" /,
     'unico_selfie_cache_control off: logged');

# failures: no Cache-Control from the module, Retry-After logged

my $id404 = $t->id('status-404');
$r = $t->get("/expires/$id404");
is($r->{status}, 404, '404 under expires 1h: 404');
is_deeply(cache_control($r), [],
          '404: no Cache-Control (expires applies to 2xx/3xx only)');
like(log_line("/expires/$id404", 404), qr/ cc="-" etag="-" /,
     '404: nothing logged for them');

my $id429 = $t->id('status-429');
$r = $t->get("/selfies/$id429");
is($r->{status}, 503, 'Unico 429: 503');
like(log_line("/selfies/$id429", 503), qr/ retry="7" /,
     'Unico 429: $sent_http_retry_after logs Retry-After');

$t->check_logs;

done_testing;
