# Clients that leave early, at every point where a request waits: Unico
# slow, a coalescing follower, a service-account token refresh (the
# request that carries it, and one that polls for it), the call budget, and
# in the middle of sending the image.  Each over HTTP/1.1 (the client
# closes its connection) and HTTP/2 (the client resets its stream).
#
# What a client leaving must never do: make a call to Unico or take budget
# after it left, count as a token failure or start a back-off, be counted
# as an upstream error, or leave anything behind.  It is logged and counted
# as client_closed, status 499.

use strict;
use warnings;

use FindBin;
use lib "$FindBin::Bin/lib";

use Digest::SHA qw(sha256_hex);
use IO::Select;
use IO::Socket::INET;
use Test::More;
use Time::HiRes qw(sleep time);
use H2Client;
use UnicoTest;

my $ISS = 'gateway@tenant-7f3a.iam.acesso.io';
my $AUD = 'https://identityhomolog.acesso.io';


# An HTTP/1.1 request left open: the socket.
sub h1_open {
    my ($t, $path) = @_;
    my $s = IO::Socket::INET->new(PeerAddr => '127.0.0.1:' . $t->port,
                                  Timeout => 5) or die "connect: $!";
    $s->syswrite("GET $path HTTP/1.1\r\nHost: localhost\r\n\r\n");
    return $s;
}


# Reads a response on an open socket: its status line's code, or 0.
sub h1_read {
    my ($s, $timeout) = @_;
    my ($raw, $sel) = ('', IO::Select->new($s));
    my $deadline = time + $timeout;

    while (time < $deadline) {
        last unless $sel->can_read($deadline - time);
        my $n = $s->sysread(my $chunk, 65536);
        last unless $n;
        $raw .= $chunk;
        last if UnicoTest::response_complete($raw, 'GET');
    }

    return UnicoTest::parse_response($raw);
}


sub access_lines {
    my ($t, $re) = @_;
    return scalar grep { /$re/ } split /\n/, $t->access_log;
}


# Calls to Unico the gateway started (whether or not they reached the
# mock: nginx may notice a gone client before the connection is up).
sub calls_started {
    my ($t) = @_;
    return $t->metrics->{'unico_selfie_upstream_seconds_count'};
}


sub calls_for {
    my ($t, $id) = @_;
    return scalar grep { $_->{path} =~ m{/\Q$id\E/selfie$} }
                  @{ $t->mock_requests };
}


my $h2port = UnicoTest::free_port();


# The plain gateway: a token, coalescing, the metrics, HTTP/1 and HTTP/2.

sub plain {
    my $t = UnicoTest->new;
    $t->start_mock;

    my $conf = $t->selfie_conf(server => <<'CONF');
        location = /metrics {
            unico_selfie_metrics;
        }
CONF

    # the same server on an HTTP/2 port
    my $h2 = H2Client->listen_directives($t->{nginx}, $h2port);
    $conf =~ s/(listen\s+127\.0\.0\.1:%%PORT%%;)/$1\n        $h2/;
    $t->start_nginx($conf);
    return $t;
}


# --- Unico slow: the client leaves while the call is in flight ---

{
    my $t = plain();
    my $slow = $t->id('slow');

    my $s = h1_open($t, "/selfies/$slow");
    sleep 0.5;
    close $s;

    my $h2 = H2Client->new($h2port);
    my $sid = $h2->get("/selfies/$slow");
    sleep 0.5;
    $h2->reset($sid);

    # the connection goes on: another stream on it is answered
    my $ping = $h2->wait_stream($h2->get('/ping'), 5);
    is($ping->{status}, 200, 'HTTP/2: after a reset, the connection serves');
    $h2->close;

    ok($t->eventually(sub { access_lines($t, qr/^499 client_closed/) == 2 }),
       'Unico slow, HTTP/1 close and HTTP/2 reset: 499 client_closed, twice')
        or diag($t->access_log);

    my $m = $t->metrics;
    is($m->{'unico_selfie_failures_total{reason="client_closed"}'}, 2,
       'metrics: two client_closed');
    is($m->{'unico_selfie_failures_total{reason="upstream_error"}'}, 0,
       'metrics: a client leaving is no upstream error');
    is($m->{'unico_selfie_requests_total{status="499"}'}, 2,
       'metrics: counted with status 499');
    unlike($t->error_log, qr/\[error\].*unico selfie/,
           'no error logged for a client that left');
    like($t->error_log, qr/\[info\].*client closed the connection before the answer \(reason: client_closed\)/,
         'logged once at info as client_closed');

    # --- a coalescing follower leaves, then its leader: no second call ---

    for my $proto ('HTTP/1', 'HTTP/2') {
        my $id = $t->id('slow');
        my $before = calls_for($t, $id);
        my $started = calls_started($t);
        my ($leader, $follower, $h2c, $ls, $fs);

        if ($proto eq 'HTTP/1') {
            $leader = h1_open($t, "/selfies/$id");
            sleep 0.3;
            $follower = h1_open($t, "/selfies/$id");
            sleep 0.3;
            close $follower;
            sleep 0.3;
            close $leader;

        } else {
            $h2c = H2Client->new($h2port);
            $ls = $h2c->get("/selfies/$id");
            sleep 0.3;
            $fs = $h2c->get("/selfies/$id");
            sleep 0.3;
            $h2c->reset($fs);
            sleep 0.3;
            $h2c->reset($ls);
        }

        # a follower left behind would rejoin and call Unico at once
        sleep 1;
        is(calls_for($t, $id) - $before, 1,
           "$proto: a follower that left makes no call of its own");
        ok($t->eventually(sub { calls_started($t) - $started == 1 }),
           "$proto: ... nor starts one");
        $h2c->close if $h2c;
    }

    # --- mid-send: the client stops reading and leaves ---

    {
        my $png = $t->id('png');
        my $s = IO::Socket::INET->new(PeerAddr => '127.0.0.1:' . $t->port)
            or die;
        $s->sockopt(Socket::SO_RCVBUF(), 4096);
        $s->syswrite("GET /selfies/$png HTTP/1.1\r\nHost: localhost\r\n\r\n");
        my $got = '';
        my $sel = IO::Select->new($s);
        while (length $got < 20000 && $sel->can_read(5)) {
            $s->sysread(my $c, 4096) or last;
            $got .= $c;
        }
        close $s;
        like($got, qr{^HTTP/1\.1 200 }, 'mid-send, HTTP/1: the image began');

        my $h2c = H2Client->new($h2port);
        my $sid = $h2c->get("/selfies/$png");
        # no WINDOW_UPDATE: nginx stops at the initial 64 KiB window
        my $st = $h2c->wait_stream($sid, 10, 16384);
        is($st->{status}, 200, 'mid-send, HTTP/2: the image began');
        $h2c->reset($sid);
        my $ping = $h2c->wait_stream($h2c->get('/ping'), 5);
        is($ping->{status}, 200, 'mid-send, HTTP/2: the connection goes on');
        $h2c->close;

        # the worker is fine: a whole image right after
        my $r = $t->get("/selfies/$png");
        is(sha256_hex($r->{body}), $t->fixture_sha256('selfie-480x640.png'),
           'after the clients left mid-send: byte-exact');
    }

    $t->check_logs;
}


# --- the call budget: a waiter that leaves takes no budget ---

for my $proto ('HTTP/1', 'HTTP/2') {
    my $t = UnicoTest->new;
    $t->start_mock;

    my $conf = $t->selfie_conf(
        http => 'unico_selfie_budget 1r/s burst=1 wait=5s;',
        server => 'location = /metrics { unico_selfie_metrics; }');
    my $h2 = H2Client->listen_directives($t->{nginx}, $h2port);
    $conf =~ s/(listen\s+127\.0\.0\.1:%%PORT%%;)/$1\n        $h2/;
    $t->start_nginx($conf);

    my ($a, $b, $c) = map { $t->id($_) } qw(jpeg-small jpeg-medium png);

    is($t->get("/selfies/$a")->{status}, 200, "$proto budget: the first call");
    my $t0 = time;

    if ($proto eq 'HTTP/1') {
        my $s = h1_open($t, "/selfies/$b");
        sleep 0.3;
        close $s;
    } else {
        my $h2c = H2Client->new($h2port);
        my $sid = $h2c->get("/selfies/$b");
        sleep 0.3;
        $h2c->reset($sid);
        $h2c->close;
    }

    # the share that refills at 1 s is the next request's, not the gone one's
    sleep(1.2 - (time - $t0)) if time - $t0 < 1.2;
    my $r = $t->get("/selfies/$c");
    is($r->{status}, 200, "$proto budget: the next request is served");
    is(calls_for($t, $b), 0, "$proto budget: the waiter that left made no call");
    is($t->selfie_calls, 2, "$proto budget: two calls in all");
    ok($t->eventually(sub { calls_started($t) == 2 }),
       "$proto budget: two calls started in all");
    ok(access_lines($t, qr/^499 client_closed/) == 1,
       "$proto budget: the waiter is logged as client_closed");

    $t->check_logs;
}


# --- service accounts: the request that refreshes the token leaves ---

sub account {
    my (%o) = @_;
    my $t = UnicoTest->new;
    my $certs = $t->certs;

    $t->start_mock(tokens => [], args => [
        '--public-key', "$certs/sa.pub.pem", '--issuer', $ISS,
        '--audience', $AUD]);

    my $include = $o{old_include}
        ? '%%DIR%%/token-no-abort.conf' : '%%CONF%%/unico_selfie_token.conf';

    if ($o{old_include}) {
        # the include as it was: the token request dies with its client
        my $inc = $t->slurp($t->repo . '/conf/unico_selfie_token.conf');
        $inc =~ s/^proxy_ignore_client_abort.*$//m;
        $t->write_file('token-no-abort.conf', $inc, 0644);
    }

    my $conf = $t->selfie_conf(
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
        server => <<"CONF");
        location /_unico_token/ {
            internal;
            include                        $include;
            proxy_ssl_trusted_certificate  %%CERTS%%/ca.pem;
            proxy_ssl_name                 localhost;
            proxy_read_timeout             5s;
            proxy_pass                     https://%%MOCK%%/;
        }

        location = /metrics {
            unico_selfie_metrics;
        }
CONF

    my $h2 = H2Client->listen_directives($t->{nginx}, $h2port);
    $conf =~ s/(listen\s+127\.0\.0\.1:%%PORT%%;)/$1\n        $h2/;
    $t->start_nginx($conf);
    $t->mock_control(token_delay => 1);

    return $t;
}


# opens a selfie request in $proto: a closure that makes the client leave
sub leave_later {
    my ($t, $proto, $path) = @_;

    if ($proto eq 'HTTP/1') {
        my $s = h1_open($t, $path);
        return sub { close $s };
    }

    my $h2c = H2Client->new($h2port);
    my $sid = $h2c->get($path);
    return sub { $h2c->reset($sid); $h2c->close };
}


for my $case (['HTTP/1', 0], ['HTTP/2', 0], ['HTTP/1', 1]) {
    my ($proto, $old) = @$case;
    my $name = $proto . ($old ? ', a token location without '
                                . 'proxy_ignore_client_abort' : '');
    my $t = account(old_include => $old);
    my $id = $t->id('jpeg-small');

    # A starts the refresh; B waits for it; A leaves before the answer
    my $leave = leave_later($t, $proto, "/selfies/$id");
    sleep 0.2;
    my $b = h1_open($t, '/selfies/' . $t->id('jpeg-medium'));
    sleep 0.2;
    $leave->();

    my $r = h1_read($b, 10);
    is($r->{status}, 200, "$name: the refresher left, the waiter is served");

    my $m = $t->metrics;
    is($m->{'unico_selfie_token_refreshes_total{result="failed"}'}, 0,
       "$name: not a token failure");
    is($t->get("/selfies/$id")->{status}, 200,
       "$name: no back-off: the next request is served");
    unlike($t->error_log, qr/backing off|token_unavailable|token_failed/,
           "$name: no back-off logged");
    is($t->token_calls, $old ? 2 : 1,
       $old ? "$name: the abandoned refresh is made again"
            : "$name: the refresh completed for the waiters");
    is(calls_for($t, $id), 1,
       "$name: the refresher that left made no selfie call");

    $t->check_logs;
}


# --- service accounts: a request polling for the token leaves ---

for my $proto ('HTTP/1', 'HTTP/2') {
    my $t = account();
    my ($a, $b) = map { $t->id($_) } qw(jpeg-small jpeg-medium);

    my $sa = h1_open($t, "/selfies/$a");
    sleep 0.2;
    my $leave = leave_later($t, $proto, "/selfies/$b");
    sleep 0.3;
    $leave->();

    is(h1_read($sa, 10)->{status}, 200, "$proto poller left: A is served");
    sleep 0.5;
    is(calls_for($t, $b), 0, "$proto: the poller that left made no call");
    is($t->token_calls, 1, "$proto: one token request");
    ok($t->eventually(sub { calls_started($t) == 1 }),
       "$proto: the poller started no call");
    ok($t->eventually(sub { access_lines($t, qr/^499 client_closed/) == 1 }),
       "$proto: the poller is logged as client_closed");

    $t->check_logs;
}


# --- log_subrequest on: the calls to Unico are logged, never counted ---

{
    my $t = UnicoTest->new;
    $t->start_mock;
    $t->start_nginx($t->selfie_conf(server => <<'CONF'));
        log_subrequest  on;

        location = /metrics {
            unico_selfie_metrics;
        }
CONF

    my $slow = $t->id('slow');
    my $s = h1_open($t, "/selfies/$slow");
    sleep 0.5;
    close $s;

    is($t->get('/selfies/' . $t->id('jpeg-small'))->{status}, 200,
       'log_subrequest on: 200');

    my $m;
    ok($t->eventually(sub {
           $m = $t->metrics;
           ($m->{'unico_selfie_requests_total{status="499"}'} // 0) == 1 }),
       'log_subrequest on: the client that left is counted once');
    is($m->{'unico_selfie_requests_total{status="200"}'}, 1,
       'log_subrequest on: the request served is counted once');
    is($m->{'unico_selfie_upstream_seconds_count'}, 2,
       'log_subrequest on: each call is timed once');
    is($m->{'unico_selfie_failures_total{reason="upstream_error"}'}, 0,
       'log_subrequest on: no upstream error');

    $t->check_logs;
}


done_testing;
