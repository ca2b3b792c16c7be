# Coalescing across the workers of one gateway: with a cache zone, the
# first request to miss a selfie marks a flight in the zone, and requests of
# the other workers wait for its image (or its failure) instead of calling
# Unico too.  So the calls a gateway makes do not grow with
# worker_processes.  Without a cache, coalescing is per worker.

use strict;
use warnings;

use FindBin;
use lib "$FindBin::Bin/lib";

use Digest::SHA qw(sha256_hex);
use IO::Socket::INET;
use POSIX ();
use Test::More;
use UnicoTest;

my $N = 40;

sub gateway {
    my (%o) = @_;
    my $t = UnicoTest->new;
    $t->start_mock;

    my $conf = $t->selfie_conf(
        http => ($o{cache} ? 'unico_selfie_cache_zone selfies:8m ttl=30s;' : '')
                . "\n    log_format  workers  '\$pid \$status \$unico_selfie_reason';",
        selfie => $o{cache} ? 'unico_selfie_cache selfies;' : '',
        server => 'access_log %%DIR%%/logs/workers.log workers;');

    # reuseport: the kernel spreads the connections over both workers
    $conf =~ s/(listen\s+127\.0\.0\.1:%%PORT%%)/$1 reuseport/;
    $t->start_nginx($conf, workers => 2);

    return $t;
}

sub workers_seen {
    my ($t) = @_;
    my %pid = map { /^(\d+) / ? ($1 => 1) : () }
              split /\n/, $t->slurp($t->dir . '/logs/workers.log');
    return scalar keys %pid;
}

# --- an image: one call for all workers ---

{
    my $t = gateway(cache => 1);
    my $id = $t->id('delay-1s');
    my $sha = $t->fixture_sha256('selfie-720x960.jpg');

    my @r = $t->concurrent_get(("/selfies/$id") x $N);
    is(scalar(grep { $_->{status} == 200 && sha256_hex($_->{body}) eq $sha } @r),
       $N, "$N concurrent requests on 2 workers: all byte-exact");
    ok($t->eventually(sub { workers_seen($t) == 2 }),
       'both workers served some of them');
    is($t->selfie_calls, 1, 'one call to Unico for both workers');

    # --- a failure: shared too, for a moment ---

    my $missing = $t->id('status-404-delay');
    @r = $t->concurrent_get(("/selfies/$missing") x $N);
    is(scalar(grep { $_->{status} == 404 } @r), $N,
       "$N concurrent requests for a missing selfie: all 404");
    is(scalar(grep { $_->{path} =~ /\Q$missing\E/ } @{ $t->mock_requests }),
       1, 'one call to Unico for the failure');

    # the next request asks again: a failure is shared with the requests
    # that waited for it, never cached for those that come after
    is($t->get("/selfies/$missing")->{status}, 404, 'right after: 404 again');
    is(scalar(grep { $_->{path} =~ /\Q$missing\E/ } @{ $t->mock_requests }),
       2, 'right after: a new call (a failure is never cached)');

    $t->check_logs;
}

# --- a worker whose call fails within the gateway lets the others call ---

{
    my $t = gateway(cache => 1);
    my $id = $t->id('delay-1s');
    my $sha = $t->fixture_sha256('selfie-720x960.jpg');

    # the first request's client leaves while its call is in flight; the
    # requests waiting on it, in any worker, go on and are served
    my $s = IO::Socket::INET->new(PeerAddr => '127.0.0.1:' . $t->port) or die;
    $s->syswrite("GET /selfies/$id HTTP/1.1\r\nHost: localhost\r\n\r\n");
    select(undef, undef, undef, 0.3);

    # the child holds the only copy of the socket and closes it at 0.5 s
    my $pid = fork // die;
    if ($pid == 0) {
        select(undef, undef, undef, 0.5);
        close $s;
        POSIX::_exit(0);
    }
    close $s;

    my @r = $t->concurrent_get(("/selfies/$id") x 10);
    waitpid $pid, 0;

    is(scalar(grep { $_->{status} == 200 && sha256_hex($_->{body}) eq $sha } @r),
       10, 'the leader left: every waiting request is still served');
    like($t->access_log, qr/^499 client_closed /m, 'the leader: 499');

    $t->check_logs;
}

# --- without a cache: per worker ---

{
    my $t = gateway(cache => 0);
    my $id = $t->id('delay-1s');

    my @r = $t->concurrent_get(("/selfies/$id") x $N);
    is(scalar(grep { $_->{status} == 200 } @r), $N, 'no cache: all served');
    cmp_ok($t->selfie_calls, '<=', 2, 'no cache: at most one call per worker');

    $t->check_logs;
}

done_testing;
