# docs/deployment.md, "An access-audit log", run as written: each request
# to a selfie is one JSON line with the viewer that auth_request
# established, the processId, the status and the reason; refused viewers
# are logged too; the signature and the token never are.

use strict;
use warnings;

use FindBin;
use lib "$FindBin::Bin/lib";

use JSON::PP qw(decode_json);
use Test::More;
use DocExamples;
use UnicoTest;

my $t = UnicoTest->new;
my $repo = $t->repo;
my $b = DocExamples::block($repo, 'docs/deployment.md', qr/audit log/);
ok($b, 'the audit recipe') or BAIL_OUT('no block');

# the application's session check, played by a server added to the block:
# a cookie "session=<user>" is that user, no cookie is 401, "mallory" 403
my $text = $b->{text};
ok($text =~ s/^(\s*)(server\s+127\.0\.0\.1:8081;)/$1$2/m,
   'the block names the app at 127.0.0.1:8081');
$text =~ s/^}\s*\z/    server {
        listen  127.0.0.1:8081;
        location = \/auth\/selfie {
            if (\$cookie_session = "mallory") { return 403; }
            if (\$cookie_session = "") { return 401; }
            add_header  X-Viewer  \$cookie_session;
            return 204;
        }
    }
}
/m or die 'no end of http';

DocExamples::start_mock($t, '--token', 'YOUR_UNICO_ACCESS_TOKEN');
my $run = DocExamples::start($t, $text, $t->dir . '/recipe',
                             files => DocExamples::files($t));
my $front = (grep { $_ ne '8081' } keys %{ $run->{ports} })[0];
$t->{port} = $run->{ports}{$front};

my $log = "$run->{prefix}/root/var/log/nginx/selfie-audit.log";
my $id = $t->id('jpeg-small');
my $missing = $t->id('status-404');

sub get_as {
    my ($user, $path) = @_;
    return $t->get($path, headers => $user ? { Cookie => "session=$user" } : {});
}

is(get_as('alice', "/selfies/$id")->{status}, 200, 'alice sees a selfie');
is(get_as('bob', "/selfies/$missing")->{status}, 404, 'bob asks for one without a selfie');
is(get_as('', "/selfies/$id")->{status}, 401, 'no session: 401');
is(get_as('mallory', "/selfies/$id")->{status}, 403, 'mallory: 403');
is(get_as('carol', '/selfies/x"y%22z')->{status}, 400, 'carol, a malformed id: 400');
is(get_as('alice', "/selfies/$id?expires=1&sig=c2VjcmV0")->{status}, 200,
   'alice again, with query arguments');

my @lines = split /\n/, $t->eventually(sub {
    my $l = $t->slurp($log);
    (() = $l =~ /\n/g) >= 6 ? $l : undef;
}) // '';
is(scalar @lines, 6, 'six audit lines');

my @e = map { my $e = eval { decode_json($_) }; ok($e, "valid JSON: $_"); $e || {} } @lines;

is_deeply([ map { $_->{viewer} } @e ], ['alice', 'bob', '', '', 'carol', 'alice'],
          'the viewer auth_request established (empty when refused)');
is_deeply([ map { $_->{status} } @e ], [200, 404, 401, 403, 400, 200], 'the status');
is_deeply([ map { $_->{reason} } @e ],
          ['ok', 'unico_404', '', '', 'bad_process_id', 'ok'], 'the reason');
is_deeply([ map { $_->{process} } @e ], [$id, $missing, $id, $id, 'x"y"z', $id],
          'the processId as requested');
is($e[0]{unico_status}, '200', 'Unico\'s status');
like($e[0]{time}, qr/^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d/, 'the time');
like($e[0]{request_id}, qr/^[0-9a-f]{32}$/, 'a request id');

my $all = $t->slurp($log);
unlike($all, qr/c2VjcmV0|sig=|expires=/, 'no signature or query in the audit log');
unlike($all, qr/YOUR_UNICO_ACCESS_TOKEN|Bearer/, 'no token in the audit log');

$t->check_logs;

done_testing;
