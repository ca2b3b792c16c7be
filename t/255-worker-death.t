# A worker that dies (a crash, the OOM killer, an operator's kill -9) in
# the middle of a request does not stop the other workers, nor the worker
# the master starts in its place:
#
# - a mutex it held (the call budget, a cache zone, the service-account
#   token slots) is released: each is its zone's slab-pool mutex, which
#   nginx's master releases when it reaps a worker that held it ("shared
#   memory zone ... was locked by"); a lock of the module's own (the budget
#   had a spin lock once) would stay held, and every worker would spin on
#   it from the next request on;
# - a call it had in flight for a selfie, which other workers' requests for
#   that selfie would wait for (coalescing across workers), is taken over
#   by the next request for it, not waited for until it expires (60 s);
# - a token refresh it had under way, which other requests poll for, is
#   taken over too, not waited out (the account's wait, then 504);
# - a cached selfie it was sending, which it holds in the zone, is wiped
#   once its TTL has passed all the same.
#
# gdb stops the only worker at each of those points and kills it there.

use strict;
use warnings;

use FindBin;
use lib "$FindBin::Bin/lib";

use Digest::SHA qw(sha256_hex);
use IO::Select;
use IO::Socket::INET;
use POSIX qw(WNOHANG);
use Test::More;
use Time::HiRes qw(sleep time);
use UnicoTest;

my $ISS = 'gateway@tenant-7f3a.iam.acesso.io';

my $GDB = '/usr/bin/gdb';
plan skip_all => "no $GDB (build.sh installs it)" unless -x $GDB;

my $t = UnicoTest->new;
my $certs = $t->certs;

$t->start_mock(tokens => [], args => [
    '--public-key', "$certs/sa.pub.pem", '--issuer', $ISS,
    '--audience', 'https://identityhomolog.acesso.io']);

# wait 5s: a token refresh lost with its worker, if it were waited out,
# would answer 504 after 5 s (the mark itself lasts wait + 5 s)
$t->start_nginx($t->selfie_conf(
    token => '',
    selfie => "unico_selfie_account  sandbox;\n"
              . "            unico_selfie_cache    faces;",
    http => <<"CONF",
    unico_selfie_cache_zone  faces:4m ttl=1h;
    unico_selfie_budget      100r/s burst=100;

    unico_selfie_service_account sandbox {
        key_file     %%CERTS%%/sa.key;
        issuer       $ISS;
        environment  sandbox;
        token_api    /_unico_token;
        wait         5s;
    }
CONF
    server => UnicoTest::token_location()));

# under ASan a worker's start and gdb's attach are several times slower
my $slow = $t->sanitized ? 4 : 1;


# The one worker, once the master has it (after a kill: the new one).
sub worker {
    my ($old) = @_;
    my @w;
    $t->eventually(sub {
        @w = grep { !defined $old || $_ != $old } $t->worker_pids;
        @w == 1;
    }, 20 * $slow);
    return $w[0];
}


# Runs gdb on the worker: it stops at $where (gdb commands after a first
# breakpoint, set once a request is on its way), and kills the worker
# there.  Returns gdb's output, "GDB-KILLING" before the kill.
sub kill_at {
    my ($pid, $path, @where) = @_;

    my @cmd = ($GDB, '-nx', '-batch', '-p', $pid,
               '-ex', 'set pagination off',
               '-ex', 'set confirm off',
               (map { ('-ex', $_) } @where),
               '-ex', 'echo GDB-KILLING\n',
               '-ex', 'kill');

    # the first "continue" is where the request must be sent
    my $i = 0;
    $i++ until $cmd[$i] eq 'continue';
    splice @cmd, $i, 0, 'echo GDB-READY\n', '-ex';

    my $gdb = open(my $out, '-|') // die "fork: $!";
    if (!$gdb) {
        open STDERR, '>&', \*STDOUT;
        exec @cmd or die "exec $GDB: $!";
    }

    my ($log, $sel, $client) = ('', IO::Select->new($out));
    my $deadline = time + 60 * $slow;

    while (time < $deadline && $sel->can_read($deadline - time)) {
        my $n = sysread($out, my $chunk, 4096);
        last unless $n;
        $log .= $chunk;

        if (!$client && $log =~ /^GDB-READY/m) {
            $client = IO::Socket::INET->new(
                PeerAddr => '127.0.0.1:' . $t->port, Timeout => 5)
                or die "connect: $!";
            $client->syswrite("GET $path HTTP/1.1\r\nHost: localhost\r\n"
                              . "Connection: close\r\n\r\n");
        }
    }

    # gdb exits once the worker is killed (kill 0 would see its zombie)
    my $until = time + 10 * $slow;
    my $done;
    sleep 0.05 until ($done = waitpid($gdb, WNOHANG)) || time >= $until;

    if (!$done) {
        kill 'KILL', $gdb;
        waitpid $gdb, 0;
        $log .= "\n(gdb did not finish in time)";
    }
    close $out;

    return $log;
}


sub served {
    my ($selfie, $name) = @_;
    my $r = $t->get('/selfies/' . $t->id($selfie), timeout => 15 * $slow);
    is($r->{status}, 200, "$name: served");
    is(sha256_hex($r->{body}),
       $t->fixture_sha256($t->processes->{$selfie}{fixture}),
       "$name: byte-exact");
}


# gdb's way into $stage and then out of the next ngx_shmtx_lock(), and
# what gdb prints when it got there (with or without nginx's symbols)
sub holding {
    my ($stage) = @_;
    return [ "break $stage", 'continue', 'delete', 'break ngx_shmtx_lock',
             'continue', 'finish' ],
           qr/^Breakpoint\ 2,\ (?:0x\w+\ in\ )?ngx_shmtx_lock\ \(.*
              ^(?:0x\w+\ in\ )?\Q$stage\E\ \(.*^GDB-KILLING/msx;
}


# [ what, gdb's way there, what gdb prints there, the zone whose mutex it
#   holds, the selfie it asked for, a selfie not asked for yet ]
my @cases = (
    [ 'a token refresh under way',
      [ 'break ngx_http_unico_selfie_token_done', 'continue' ],
      qr/^Breakpoint\ 1,\ (?:0x\w+\ in\ )?ngx_http_unico_selfie_token_done
         \ \(.*^GDB-KILLING/msx,
      undef, 'jpeg-small', 'pretty-json' ],
    [ 'the token slots', holding('ngx_http_unico_selfie_token_stage'),
      'unico_selfie_tokens', 'jpeg-medium', 'extra-fields' ],
    [ 'a cache zone', holding('ngx_http_unico_selfie_cache_stage'),
      'faces', 'jpeg-large', 'reordered' ],
    [ 'the call budget', holding('ngx_http_unico_selfie_budget_stage'),
      'unico_selfie_budget', 'png', 'no-padding' ],
);

for my $case (@cases) {
    my ($name, $where, $there, $zone, $lost, $fresh) = @$case;
    my $pid = worker();

    my $gdb = kill_at($pid, '/selfies/' . $t->id($lost), @$where);
    like($gdb, $there, "$name: the worker was stopped there") or diag($gdb);

    ok($t->eventually(sub { !kill 0, $pid }, 20 * $slow),
       "$name: that worker is gone");

    if ($zone) {
        ok($t->eventually(sub {
               $t->error_log
                   =~ /shared memory zone "\Q$zone\E" was locked by $pid\b/
           }, 20 * $slow),
           "$name: the master released the zone's mutex");
    }

    ok(worker($pid), "$name: the master started a new worker");

    # a selfie nobody asked for: every stage runs, takes every lock
    served($fresh, "$name: a new selfie");

    # the one the dead worker was calling for
    served($lost, "$name: the selfie it was calling for");
}

like($t->error_log,
     qr/service account "sandbox": the token refresh of worker \d+ was lost/,
     'the lost token refresh is logged');
like($t->error_log, qr/the call of worker \d+ for this selfie was lost/,
     'a lost call is logged');

# the zones still work: the cache serves what it stored
my $calls = $t->selfie_calls;
served('jpeg-small', 'afterwards, a cached selfie');
is($t->selfie_calls, $calls, 'afterwards: from the cache');

$t->check_logs_except(qr/exited on signal 9/,
                      qr/shared memory zone ".*" was locked by/);


# --- a worker that dies while it sends a cached selfie ---
#
# The hit is sent from the zone, so the entry is held while it is sent;
# the dead worker never lets go of it.  The selfie must still be wiped
# from shared memory once its TTL has passed: the test reads the zones
# through the master's /proc/<pid>/mem, where a face left behind would be.

# whether $needle is in any shared mapping of nginx's master (the zones)
sub in_zones {
    my ($u, $needle) = @_;
    my $pid = $u->master_pid or die 'no master';
    no warnings 'portable';     # 64-bit addresses

    open my $maps, '<', "/proc/$pid/maps" or die "maps: $!";
    open my $mem, '<:raw', "/proc/$pid/mem" or die "mem: $!";
    my $found = 0;

    while (my $line = <$maps>) {
        my ($from, $to, $perm) = $line =~ /^([0-9a-f]+)-([0-9a-f]+) (\S+)/
            or next;
        next unless $perm eq 'rw-s';

        sysseek($mem, hex $from, 0) or next;
        my $len = hex($to) - hex($from);
        my $got = sysread($mem, my $data, $len) // next;

        $found ||= index($data, $needle) >= 0;
    }

    return $found;
}

{
    my $u = UnicoTest->new;
    $u->start_mock;

    # small socket buffers: the worker cannot hand the 1.3 MB image to the
    # kernel at once, it holds the entry for as long as the client reads
    my $conf = $u->selfie_conf(
        http => 'unico_selfie_cache_zone  brief:4m ttl=3s;',
        selfie => 'unico_selfie_cache  brief;');
    $conf =~ s/(listen\s+127\.0\.0\.1:%%PORT%%)/$1 sndbuf=16k/ or die;
    $u->start_nginx($conf);

    my $id = $u->id('png');
    my $fixture = $u->processes->{png}{fixture};
    my $image = $u->slurp($u->repo . "/t/fixtures/$fixture");
    my $needle = substr $image, length($image) / 2, 64;

    is($u->get("/selfies/$id")->{status}, 200, 'a hit, slow: the selfie cached');
    ok(in_zones($u, $needle), 'a hit, slow: the selfie is in the zone');

    my $s = IO::Socket::INET->new(PeerAddr => '127.0.0.1:' . $u->port)
        or die "connect: $!";
    $s->sockopt(Socket::SO_RCVBUF(), 4096);
    $s->syswrite("GET /selfies/$id HTTP/1.1\r\nHost: localhost\r\n"
                 . "Connection: close\r\n\r\n");

    # the response has begun: it is a hit, and its worker holds the entry
    my $head = '';
    IO::Select->new($s)->can_read(10 * $slow) and $s->sysread($head, 512);
    like($head, qr{^HTTP/1\.1 200 }, 'a hit, slow: the response has begun');

    my ($pid) = $u->worker_pids;
    kill 'KILL', $pid;
    ok($u->eventually(sub { !kill 0, $pid }, 20 * $slow),
       'a hit, slow: its worker killed');
    close $s;

    # TTL 3 s, a sweep every second; and a loaded machine
    ok($u->eventually(sub { !in_zones($u, $needle) }, 15 * $slow),
       'a hit, slow: the selfie is wiped from the zone after its TTL');
    like($u->error_log,
         qr/worker $pid died while sending a selfie from cache zone "brief"/,
         'a hit, slow: the lost hold is logged');

    my $r = $u->get("/selfies/$id", timeout => 15 * $slow);
    is(sha256_hex($r->{body}), $u->fixture_sha256($fixture),
       'a hit, slow: afterwards, served again, byte-exact');

    $u->check_logs_except(qr/exited on signal 9/);
}

done_testing;
