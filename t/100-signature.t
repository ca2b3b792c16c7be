# Signed, expiring URLs: a good signature is served, every bad one is 403
# with its reason and Unico is never called; two keys for rotation; the
# skew; the order of the checks; key files that nginx -t refuses, without
# ever printing a key; a reload that rotates the keys.

use strict;
use warnings;

use FindBin;
use lib "$FindBin::Bin/lib";

use Digest::SHA qw(sha256_hex);
use Test::More;
use Time::HiRes qw(sleep time);
use UnicoTest;

my $t = UnicoTest->new;

my $key_a = $t->signing_key('a');
my $key_b = $t->signing_key('b');
my $key_c = $t->signing_key('c');

$t->write_file('keys', "# current, then next\n$key_a\n\n"
                       . ($key_b =~ tr{+/}{-_}r =~ s/=+$//r) . "\n");
$t->write_file('keys-c', "$key_c\n");

$t->start_mock;
$t->start_nginx($t->selfie_conf(
    server => <<'CONF',
        unico_selfie_signature_keys  %%DIR%%/keys;

        # no signature needed here
        location ~ ^/open/(?<open_process>[^/]+)$ {
            unico_selfie                 $open_process;
            unico_selfie_api             /_unico_api;
            unico_selfie_token           test-token-2b7e1516.28aed2a6;
            unico_selfie_signature_keys  off;
        }

        # no skew at all
        location ~ ^/strict/(?<strict_process>[^/]+)$ {
            unico_selfie                 $strict_process;
            unico_selfie_api             /_unico_api;
            unico_selfie_token           test-token-2b7e1516.28aed2a6;
            unico_selfie_signature_skew  0;
        }

        # an empty token would be 502: the signature is checked first
        location ~ ^/notoken/(?<nt_process>[^/]+)$ {
            unico_selfie                 $nt_process;
            unico_selfie_api             /_unico_api;
            unico_selfie_token           "";
        }

        # another key file in another location
        location ~ ^/other/(?<other_process>[^/]+)$ {
            unico_selfie                 $other_process;
            unico_selfie_api             /_unico_api;
            unico_selfie_token           test-token-2b7e1516.28aed2a6;
            unico_selfie_signature_keys  %%DIR%%/keys-c;
        }
CONF
));

my $id = $t->id('jpeg-small');
my $sha = $t->fixture_sha256('selfie-360x480.jpg');
my $now = time;
my $exp = int($now) + 300;

# the "standard base64" case below must differ from the signature: one
# signature in four has neither "-" nor "_" (that case then failed)
$exp++ while $t->signed_path($key_a, $id, $exp) !~ /sig=[^&]*[-_]/;

sub calls { $t->selfie_calls }

# served: key A, key B (the second line, written base64url), upper case

for my $case (['key A', $key_a, $id], ['key B', $key_b, $id],
              ['upper-case processId', $key_a, uc $id])
{
    my ($name, $key, $pid) = @$case;
    my $before = calls();
    my $r = $t->get($t->signed_path($key, $pid, $exp));

    is($r->{status}, 200, "$name: 200");
    is(sha256_hex($r->{body}), $sha, "$name: byte-exact");
    is(calls(), $before + 1, "$name: one call to Unico");
}

my $h = $t->head($t->signed_path($key_a, $id, $exp));
is($h->{status}, 200, 'HEAD with a signature: 200');

# refused: 403, the reason, no call to Unico

my $good = $t->signed_path($key_a, $id, $exp);
my ($sig) = $good =~ /sig=([^&]+)/;
my $flip = substr($sig, 0, 5) . (substr($sig, 5, 1) eq 'A' ? 'B' : 'A')
           . substr($sig, 6);
my $other_id = $t->id('jpeg-medium');

my @refused = (
    ['no arguments',           "/selfies/$id",                 'no_signature'],
    ['no sig',                 "/selfies/$id?expires=$exp",    'no_signature'],
    ['no expires',             "/selfies/$id?sig=$sig",        'no_signature'],
    ['empty sig',              "/selfies/$id?expires=$exp&sig=",
                                                               'bad_signature'],
    ['one character changed',  "/selfies/$id?expires=$exp&sig=$flip",
                                                               'bad_signature'],
    ['expires changed',        "/selfies/$id?expires=" . ($exp + 1)
                               . "&sig=$sig",                  'bad_signature'],
    ['another processId',      "/selfies/$other_id?expires=$exp&sig=$sig",
                                                               'bad_signature'],
    ['padded',                 "$good=",                       'bad_signature'],
    ['percent-encoded',        "/selfies/$id?expires=$exp&sig="
                               . substr($sig, 0, 42) . '%'
                               . sprintf('%02X', ord substr($sig, 42)),
                                                               'bad_signature'],
    ['standard base64',        "/selfies/$id?expires=$exp&sig="
                               . ($sig =~ tr{-_}{+/}r),        'bad_signature'],
    ['expires not a number',   "/selfies/$id?expires=soon&sig=$sig",
                                                               'bad_signature'],
    ['a key nobody has',       $t->signed_path($key_c, $id, $exp),
                                                               'bad_signature'],
    ['expired',                $t->signed_path($key_a, $id, int($now) - 40),
                                                           'signature_expired'],
    ['expired long ago',       $t->signed_path($key_a, $id, 0),
                                                           'signature_expired'],
);

for my $case (@refused) {
    my ($name, $path, $reason) = @$case;
    my $before = calls();
    my $log_before = length $t->error_log;

    my $r = $t->get($path);

    is($r->{status}, 403, "$name: 403");
    is(calls(), $before, "$name: Unico not called");

    my $log = substr $t->error_log, $log_before;
    like($log, qr/\[info\].*unico selfie: .*\(reason: \Q$reason\E\), processId: "[0-9a-fA-F-]{36}"/,
         "$name: logged at info as $reason");
}

like($t->access_log, qr/^403 signature_expired /m,
     'access log: 403 signature_expired');

# within the skew (30s by default) it is still good; not with skew 0

my $r = $t->get($t->signed_path($key_a, $id, int($now) - 10));
is($r->{status}, 200, 'expired 10s ago, within the default 30s skew: 200');

$r = $t->get($t->signed_path($key_a, $id, int(time) - 2,
                             prefix => '/strict/'));
is($r->{status}, 403, 'skew 0: expired 2s ago is refused');

$r = $t->get($t->signed_path($key_a, $id, int(time) + 60,
                             prefix => '/strict/'));
is($r->{status}, 200, 'skew 0: a valid one is served');

# off in a location; another key file in another

$r = $t->get("/open/$id");
is($r->{status}, 200, 'unico_selfie_signature_keys off: no signature needed');

$r = $t->get($t->signed_path($key_c, $id, $exp, prefix => '/other/'));
is($r->{status}, 200, 'another location, another key file: served');

$r = $t->get($t->signed_path($key_a, $id, $exp, prefix => '/other/'));
is($r->{status}, 403, "... and the server's keys are not accepted there");

# the order of the checks: method, processId, signature, token

$r = $t->request('POST', $good);
is($r->{status}, 405, 'POST: 405 before the signature');

$r = $t->get("/selfies/not-a-uuid?expires=$exp&sig=$sig");
is($r->{status}, 400, 'a bad processId: 400 before the signature');

my $before = calls();
$r = $t->get("/notoken/$id?expires=$exp&sig=$flip");
is($r->{status}, 403, 'a bad signature: 403 before the token (else 502)');
$r = $t->get($t->signed_path($key_a, $id, $exp, prefix => '/notoken/'));
is($r->{status}, 502, '... and a good one goes on to the token');
is(calls(), $before, 'Unico never called');

# no key material in any log

my $logs = $t->error_log . $t->access_log;
for my $k ($key_a, $key_b, $key_c) {
    my $core = substr($k, 0, 40);
    unlike($logs, qr/\Q$core\E/, 'no key in the logs');
}

# rotation by reload: only key C now

$t->write_file('keys', "$key_c\n");
kill 'HUP', $t->{pids}{nginx};

my $deadline = time + 10;
my $rotated = 0;
while (time < $deadline) {
    $r = $t->get($t->signed_path($key_a, $id, $exp));
    if ($r->{status} == 403) { $rotated = 1; last }
    sleep 0.2;
}

ok($rotated, 'after a reload with a new key file, key A is refused');
$r = $t->get($t->signed_path($key_c, $id, $exp));
is($r->{status}, 200, '... and key C accepted');

$t->check_logs;


# nginx -t on key files: the message names the file and line, never a key

my $c = UnicoTest->new;

sub conf_t {
    my ($keys, $content, $mode) = @_;
    my $file = defined $content
               ? $c->write_file('k', $content, $mode) : "$keys";
    unlink $c->dir . '/logs/t.log';
    return $c->nginx_t(<<"CONF");
    server {
        listen 127.0.0.1:%%PORT%%;
        unico_selfie_signature_keys  $file;
    }
CONF
}

my ($rc, $out) = conf_t('/nonexistent/keys');
isnt($rc, 0, 'missing key file: nginx -t fails');
like($out, qr{open\(\) "/nonexistent/keys" failed}, '... naming it');

my $short = substr($key_a, 0, 40);             # 30 bytes
my $short_core = substr($short, 0, 30);

($rc, $out) = conf_t(undef, "# a\n$key_a\n$short\n");
isnt($rc, 0, 'a short key: nginx -t fails');
like($out, qr/signature key file "\S+", line 3: the key is shorter than 32 bytes/,
     '... naming the file and line');
unlike($out, qr/\Q$short_core\E/, '... and not the key');
unlike($out, qr/\Q$key_a\E/, '... nor the other key');

($rc, $out) = conf_t(undef, "# nothing\n");
isnt($rc, 0, 'no key: nginx -t fails');
like($out, qr/no key in the file/, '... saying so');

($rc, $out) = conf_t(undef, join('', map { "$key_a\n" } 1 .. 5));
isnt($rc, 0, 'five keys: nginx -t fails');
like($out, qr/line 5: more than 4 keys/, '... saying so');

($rc, $out) = conf_t(undef, "$key_a\nnot base64!\n");
isnt($rc, 0, 'a line that is not base64: nginx -t fails');
like($out, qr/line 2: the key is not base64/, '... saying so');

($rc, $out) = conf_t(undef, "$key_a\n", 0644);
is($rc, 0, 'a key file readable by all: accepted');
like($out, qr/\[warn\].*is accessible to every user/, '... with a warning');

($rc, $out) = conf_t(undef, "$key_a\n$key_b\n", 0600);
is($rc, 0, 'two good keys, 0600: accepted');
unlike($out, qr/\[warn\]/, '... silently');

# nginx -T prints the configuration, which holds only the file's name

my $file = $c->write_file('k', "$key_a\n");
$c->write_conf(<<"CONF");
    server {
        listen 127.0.0.1:%%PORT%%;
        unico_selfie_signature_keys  $file;
    }
CONF
my $dump = `$c->{nginx} -T -p $c->{dir} -c $c->{dir}/nginx.conf -e $c->{dir}/logs/t.log 2>&1`;
like($dump, qr/unico_selfie_signature_keys\s+\Q$file\E/, 'nginx -T shows the file');
unlike($dump, qr/\Q$key_a\E/, '... and not the key');

($rc, $out) = $c->nginx_t(<<'CONF');
    server {
        listen 127.0.0.1:%%PORT%%;
        unico_selfie_signature_skew  soon;
    }
CONF
isnt($rc, 0, 'a bad skew: nginx -t fails');

done_testing;
