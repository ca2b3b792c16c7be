# unico_selfie_metrics: after a known mix of requests, in flight together
# on four workers, every counter is exact; the histogram counts exactly the
# calls Unico received (concurrent requests for one selfie share a call);
# the counts survive a reload; the page is Prometheus' text format.

use strict;
use warnings;

use FindBin;
use lib "$FindBin::Bin/lib";

use Test::More;
use Time::HiRes qw(sleep time);
use UnicoTest;

my $t = UnicoTest->new;
my $key = $t->signing_key('metrics');
$t->write_file('keys', "$key\n");
$t->start_mock;

sub selfie_location {
    my ($prefix, $extra) = @_;
    return <<"CONF";
        location ~ ^/$prefix/(?<${prefix}_process>[^/]+)\$ {
            unico_selfie        \$${prefix}_process;
            unico_selfie_api    /_unico_api;
            unico_selfie_token  $UnicoTest::TOKEN;
            $extra
        }
CONF
}

my $locations = selfie_location('selfies', '')
    . selfie_location('signed', 'unico_selfie_signature_keys %%DIR%%/keys;')
    . selfie_location('fallback', 'error_page 404 = /placeholder;');

$t->start_nginx(<<"CONF", workers => 4);
    log_format  pids  '\$pid \$status \$unico_selfie_reason "\$request"';

    server {
        listen      127.0.0.1:%%PORT%% reuseport;
        access_log  %%DIR%%/logs/access.log pids;

$locations
        location = /metrics {
            unico_selfie_metrics;
        }

        location = /placeholder {
            internal;
            return 200 "placeholder\\n";
        }

        location /_unico_api/ {
            internal;
            include                        %%CONF%%/unico_selfie_api.conf;
            proxy_ssl_trusted_certificate  %%CERTS%%/ca.pem;
            proxy_ssl_name                 localhost;
            proxy_read_timeout             2s;
            proxy_pass                     https://%%MOCK%%/;
        }
    }
CONF

my %size = map { $_ => -s "$FindBin::Bin/fixtures/$_" }
           qw(selfie-360x480.jpg selfie-720x960.jpg selfie-1080x1440.jpg
              selfie-480x640.png);
my %file = ('jpeg-small' => 'selfie-360x480.jpg',
            'jpeg-medium' => 'selfie-720x960.jpg',
            'jpeg-large' => 'selfie-1080x1440.jpg',
            'png' => 'selfie-480x640.png');

# nothing counted yet; the page itself is not counted

my ($m, $text) = $t->metrics;
is($m->{'unico_selfie_bytes_served_total'}, 0, 'fresh zone: 0 bytes');
is($m->{'unico_selfie_upstream_seconds_count'}, 0, 'fresh zone: 0 calls');
is(scalar(grep { /^unico_selfie_requests_total/ } keys %$m), 0,
   'fresh zone: no request counted');

# the module's version and the nginx it was built for
my ($module_version) = $t->slurp($t->repo
    . '/ngx_unico_selfie_module/ngx_http_unico_selfie_version.h')
    =~ /NGX_HTTP_UNICO_SELFIE_VERSION\s+"([^"]+)"/;
my ($nginx_version) = `$t->{nginx} -v 2>&1` =~ m{nginx/(\S+)};
is($m->{"unico_selfie_build_info{version=\"$module_version\","
        . "nginx=\"$nginx_version\"}"}, 1,
   "build_info: module $module_version, nginx $nginx_version");

my $page = $t->get('/metrics');
like($page->{headers}{'content-type'}, qr{^text/plain; version=0\.0\.4},
     'Content-Type: text/plain; version=0.0.4');
is($t->request('POST', '/metrics')->{status}, 405, 'POST /metrics: 405');

for my $name (qw(unico_selfie_requests_total unico_selfie_failures_total
                 unico_selfie_token_refreshes_total
                 unico_selfie_bytes_served_total))
{
    like($text, qr/^# HELP $name .+\n# TYPE $name counter$/m,
         "$name: HELP and TYPE counter");
}
like($text, qr/^# TYPE unico_selfie_upstream_seconds histogram$/m,
     'unico_selfie_upstream_seconds: TYPE histogram');

# the mix, all in flight together

my $etag = $t->head('/selfies/' . $t->id('jpeg-small'))->{headers}{etag};
ok($etag, 'a HEAD for the ETag');

my $exp = int(time) + 300;
my @paths;
my $bytes = 0;

for my $name (sort keys %file) {
    push @paths, ('/selfies/' . $t->id($name)) x 10;
    $bytes += 10 * $size{ $file{$name} };
}

push @paths, map { "/selfies/not-a-uuid-$_" } 1 .. 10;
push @paths, ('/selfies/' . $t->id('status-404')) x 5;
push @paths, ('/selfies/' . $t->id('status-500')) x 5;
push @paths, ('/signed/' . $t->id('jpeg-small')) x 5;
push @paths, ('/signed/' . $t->id('jpeg-small') . "?expires=$exp&sig=x") x 5;
push @paths, ('/fallback/' . $t->id('status-404')) x 5;
push @paths, ('/selfies/' . $t->id('slow')) x 2;

my %want = (200 => 40 + 5, 400 => 10, 404 => 5, 502 => 5, 403 => 10,
            504 => 2);
my %got;
$got{ $_->{status} }++ for $t->concurrent_get(@paths);

is_deeply(\%got, \%want, 'the mix: every status as expected');

for (1 .. 5) {
    my $r = $t->get('/selfies/' . $t->id('jpeg-small'),
                    headers => { 'If-None-Match' => $etag });
    $got{ $r->{status} }++;
}
is($got{304}, 5, 'five 304s');

my %pids = map { (split / /)[0] => 1 } grep { /"GET \/(selfies|signed|fallback)/ }
           split /\n/, $t->access_log;
cmp_ok(scalar keys %pids, '>=', 2,
       'the requests were served by ' . scalar(keys %pids) . ' workers');

# the counters, once the last request's log phase has run

sub counted {
    my ($m) = @_;
    my $n = 0;
    $n += $m->{$_} for grep { /^unico_selfie_requests_total/ } keys %$m;
    return $n;
}

$m = $t->eventually(sub { my $m = $t->metrics; counted($m) >= 83 && $m });

my %requests = (200 => 46, 304 => 5, 400 => 10, 403 => 10, 404 => 5,
                502 => 5, 504 => 2);

for my $status (sort keys %requests) {
    is($m->{"unico_selfie_requests_total{status=\"$status\"}"},
       $requests{$status}, "requests_total{status=\"$status\"}");
}

is(scalar(grep { /^unico_selfie_requests_total/ } keys %$m),
   scalar(keys %requests), 'no other status counted');

my %failures = (bad_process_id => 10, unico_404 => 10, unico_5xx => 5,
                no_signature => 5, bad_signature => 5,
                upstream_timeout => 2);
my @reasons = map { /reason="([^"]+)"/ ? $1 : () }
              grep { /^unico_selfie_failures_total/ } keys %$m;

ok(@reasons > 30, scalar(@reasons) . ' reasons listed, zeros included');
ok(!grep({ $_ eq 'ok' } @reasons), '"ok" is not a failure');

for my $reason (sort @reasons) {
    is($m->{"unico_selfie_failures_total{reason=\"$reason\"}"},
       $failures{$reason} // 0, "failures_total{reason=\"$reason\"}");
}

# concurrent requests for one selfie share a call (coalescing): the
# histogram counts calls, as many as the mock received

my $calls = $t->selfie_calls;
cmp_ok($calls, '<=', 40 + 1 + 5 + 5 + 5 + 5 + 2,
       "$calls calls to Unico, at most one a request");
cmp_ok($calls, '>=', 7 + 5, '... at least one a selfie and one a 304');
is($m->{'unico_selfie_upstream_seconds_count'}, $calls,
   'the histogram counts every call');
is($m->{'unico_selfie_upstream_seconds_bucket{le="+Inf"}'}, $calls,
   '... and so does its +Inf bucket');

my @les = qw(0.005 0.01 0.025 0.05 0.1 0.25 0.5 1 2.5 5 10 +Inf);
my @cum = map { $m->{"unico_selfie_upstream_seconds_bucket{le=\"$_\"}"} } @les;
ok(!grep({ !defined } @cum), 'every bucket present');
ok(!grep({ $cum[$_] < $cum[$_ - 1] } 1 .. $#cum), 'buckets are cumulative');
cmp_ok($m->{'unico_selfie_upstream_seconds_bucket{le="1"}'}, '<=', $calls - 1,
       'the timeouts are over 1s');
is($m->{'unico_selfie_upstream_seconds_bucket{le="10"}'}, $calls,
   'everything under 10s');

my $sum = $m->{'unico_selfie_upstream_seconds_sum'};
like($sum, qr/^\d+\.\d{3}$/, "sum in seconds: $sum");
cmp_ok($sum, '>=', 1.9, '... at least a 2s timeout');

is($m->{'unico_selfie_bytes_served_total'}, $bytes,
   "bytes served: $bytes, the 40 images (not the HEAD, the 304s, the "
   . 'placeholders)');

is($m->{'unico_selfie_token_refreshes_total{result="ok"}'}, 0,
   'a literal token: no refresh');
is($m->{'unico_selfie_token_refreshes_total{result="failed"}'}, 0,
   '... none failed');

# a reload keeps the counts

kill 'HUP', $t->{pids}{nginx};

my $deadline = time + 10;
while (time < $deadline && $t->error_log !~ /reconfiguring/) {
    sleep 0.1;
}
sleep 1;

my $after = $t->metrics;
is($after->{'unico_selfie_bytes_served_total'}, $bytes,
   'after a reload: the same bytes');
is($after->{'unico_selfie_requests_total{status="200"}'}, 46,
   'after a reload: the same 200s');

my $r = $t->get('/selfies/' . $t->id('png'));
is($r->{status}, 200, 'after the reload: served');

$after = $t->eventually(sub { my $m = $t->metrics; counted($m) >= 84 && $m });
is($after->{'unico_selfie_requests_total{status="200"}'}, 47,
   '... and counted on top');
is($after->{'unico_selfie_bytes_served_total'},
   $bytes + $size{'selfie-480x640.png'}, '... with its bytes');

$t->check_logs;


# a service account: refreshes are counted

my $ISS = 'gateway@tenant-7f3a.iam.acesso.io';
my $AUD = 'https://identityhomolog.acesso.io';

my $s = UnicoTest->new;
my $certs = $s->certs;

$s->start_mock(tokens => [], args => [
    '--public-key', "$certs/sa.pub.pem", '--issuer', $ISS,
    '--audience', $AUD, '--token-ttl', 3600]);

$s->start_nginx($s->selfie_conf(
    token => '',
    selfie => 'unico_selfie_account sandbox;',
    http => <<"CONF",
    unico_selfie_service_account sandbox {
        key_file     %%CERTS%%/sa.key;
        issuer       $ISS;
        environment  sandbox;
        token_api    /_unico_token;
    }
CONF
    server => <<'CONF'));
        location = /metrics {
            unico_selfie_metrics;
        }

        location /_unico_token/ {
            internal;
            include                        %%CONF%%/unico_selfie_token.conf;
            proxy_ssl_trusted_certificate  %%CERTS%%/ca.pem;
            proxy_ssl_name                 localhost;
            proxy_read_timeout             2s;
            proxy_pass                     https://%%MOCK%%/;
        }
CONF

is($s->get('/selfies/' . $s->id('jpeg-small'))->{status}, 200,
   'service account: served');
is($s->get('/selfies/' . $s->id('png'))->{status}, 200,
   'service account: served again');

$m = $s->metrics;

cmp_ok($s->token_calls, '>=', 1, 'the token endpoint was called');
is($m->{'unico_selfie_token_refreshes_total{result="ok"}'},
   $s->token_calls, 'one refresh counted per token request');

is($m->{'unico_selfie_token_refreshes_total{result="failed"}'}, 0,
   'no failed refresh');

$s->check_logs;

done_testing;
