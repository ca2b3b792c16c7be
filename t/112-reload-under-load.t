# Reloads and a killed worker under load.
#
# Four client processes fetch the four fixtures (byte-exact, one connection
# per request) from nginx with 2 workers until 2 s after the last event.
# Meanwhile the configuration is changed and reloaded twice (HUP to the
# master), and one worker of the new generation is killed with SIGKILL.
# Then:
#   - no request fails but those in flight on the killed worker (counted
#     from its descriptor table while it is stopped just before the kill);
#   - every failure happens at the kill;
#   - both reloads take effect (a header carries the generation);
#   - the master starts a new worker, and requests keep succeeding after;
#   - the logs have no crash or alert but the master's report of the kill.

use strict;
use warnings;

use FindBin;
use lib "$FindBin::Bin/lib";

use Digest::SHA qw(sha256_hex);
use IO::Select;
use IO::Socket::INET;
use POSIX ();
use Test::More;
use Time::HiRes qw(time sleep);
use UnicoTest;

my $CLIENTS = 4;

my $t = UnicoTest->new;
$t->private_module;
$t->start_mock;

my $slow = $t->sanitized ? 3 : 1;

sub conf {
    my ($generation) = @_;
    return $t->selfie_conf(selfie => <<"CONF");
            add_header  X-Worker      \$pid always;
            add_header  X-Generation  $generation always;
CONF
}

$t->start_nginx(conf(1), workers => 2);

# Calls $code until it returns a non-empty list, or $timeout seconds pass.
sub wait_for {
    my ($code, $timeout) = @_;
    my $deadline = time + $timeout;
    while (1) {
        my @v = $code->();
        return @v if @v || time >= $deadline;
        sleep 0.05;
    }
}

my ($master) = wait_for(sub { $t->master_pid // () }, 10);
ok($master, "master pid $master");
my @gen1 = wait_for(sub { my @w = $t->worker_pids; @w == 2 ? @w : () },
                          10);
is(scalar @gen1, 2, "2 workers: @gen1");

my %file = ('jpeg-small' => 'selfie-360x480.jpg',
            'jpeg-medium' => 'selfie-720x960.jpg',
            'jpeg-large' => 'selfie-1080x1440.jpg',
            'png' => 'selfie-480x640.png');
my %sha = map { $_ => $t->fixture_sha256($file{$_}) } keys %file;
my %id = map { $_ => $t->id($_) } keys %file;
my @names = sort keys %file;


# One request on its own connection: "start end status worker generation
# error" (error: what went wrong, or '-').
sub fetch {
    my ($name) = @_;
    my $start = time;
    my $s = IO::Socket::INET->new(PeerAddr => '127.0.0.1:' . $t->port,
                                  Timeout => 10)
        or return "$start " . time . " 0 - - connect:$!";

    $s->syswrite("GET /selfies/$id{$name} HTTP/1.1\r\nHost: localhost\r\n"
                 . "Connection: close\r\n\r\n");

    my ($buf, $err) = ('', '-');
    my $sel = IO::Select->new($s);
    my $deadline = $start + 20 * $slow;
    while (1) {
        my $left = $deadline - time;
        if ($left <= 0 || !$sel->can_read($left)) { $err = 'timeout'; last }
        my $n = $s->sysread(my $chunk, 262144);
        if (!defined $n) { $err = "read:$!"; last }
        last if $n == 0;
        $buf .= $chunk;
    }
    close $s;
    $err =~ s/\s+/_/g;

    my $r = UnicoTest::parse_response($buf);
    my $w = $r->{headers}{'x-worker'} // '-';
    my $g = $r->{headers}{'x-generation'} // '-';
    if ($err eq '-') {
        $err = 'status' if $r->{status} != 200;
        $err = 'body' if $r->{status} == 200
                         && sha256_hex($r->{body}) ne $sha{$name};
        $err = 'no-answer' if !$r->{status};
    }
    return sprintf '%.4f %.4f %d %s %s %s', $start, time, $r->{status}, $w,
                   $g, $err;
}

sub load {
    my ($n, $until, $out) = @_;
    srand($$);
    open my $fh, '>', $out or die "$out: $!";
    $fh->autoflush(1);
    while (time < $until && !-e $t->dir . '/load.stop') {
        print $fh fetch($names[rand @names]), "\n";
    }
    close $fh;
}


# ---------------------------------------------------------------------------
# The run

# The load goes on until two seconds after the killed worker is replaced
# (load.stop), however long the reloads take on a loaded machine; the hard
# bound only keeps a broken run from hanging.
my $start = time;
my $until = $start + 60 * $slow;
my %kids;

for my $n (1 .. $CLIENTS) {
    my $pid = fork // die "fork: $!";
    if ($pid == 0) {
        load($n, $until, $t->dir . "/load-$n.txt");
        POSIX::_exit(0);
    }
    $kids{$pid} = $n;
}

sub at { my $w = $start + $_[0] - time; sleep $w if $w > 0 }

# two reloads, each with a new generation header
my (@reload_at, @gens);
for my $g (2, 3) {
    at($g == 2 ? 1.0 : 2.2);
    my @before = $t->worker_pids;
    $t->write_conf(conf($g), workers => 2);
    push @reload_at, time;
    kill 'HUP', $master;

    # the old workers leave once their requests are done
    my @new = wait_for(sub {
        my @w = $t->worker_pids;
        my %old = map { $_ => 1 } @before;
        (@w == 2 && !grep { $old{$_} } @w) ? @w : ();
    }, 10 * $slow);
    is(scalar @new, 2, "reload $g: 2 new workers (@new) replaced @before");
    push @gens, [@new];
}

# kill one worker of the last generation: stop it, count the client
# connections it holds, kill it
at(3.6);
my $victim = $gens[-1][0];
kill 'STOP', $victim;
my $in_flight = client_sockets($victim);
my $kill_at = time;
kill 'KILL', $victim;
diag("killed worker $victim holding $in_flight client connection(s)");

my @after = wait_for(sub {
    my @w = $t->worker_pids;
    (@w == 2 && !grep { $_ == $victim } @w) ? @w : ();
}, 10 * $slow);
is(scalar @after, 2, "the master started a new worker (@after) for $victim");

sleep 2 * $slow;
$t->write_file('load.stop', '');

for my $pid (keys %kids) {
    waitpid($pid, 0);
}

# a last request, once the load is over
my $last = fetch('png');
like($last, qr/^\S+ \S+ 200 \d+ 3 -$/, 'after the load: 200 from generation 3');


# ---------------------------------------------------------------------------
# Results

my @res;
for my $n (1 .. $CLIENTS) {
    for (split /\n/, $t->slurp($t->dir . "/load-$n.txt")) {
        my %r;
        @r{qw(start end status worker gen err)} = split / /;
        push @res, \%r;
    }
}

my @failed = grep { $_->{err} ne '-' } @res;
my @ok = grep { $_->{err} eq '-' } @res;
cmp_ok(scalar @ok, '>', 50 / $slow, scalar(@ok) . ' requests succeeded');

cmp_ok(scalar @failed, '<=', $in_flight,
       scalar(@failed) . " failed, at most the $in_flight in flight on the "
       . 'killed worker')
    or diag(join "\n", map { "$_->{start} $_->{end} $_->{status} $_->{err}" }
                       @failed);

my @elsewhen = grep { $_->{start} > $kill_at || $_->{end} < $kill_at } @failed;
is(scalar @elsewhen, 0, 'every failure was a request in flight at the kill')
    or diag(join "\n", map { "$_->{start} $_->{end} $_->{status} $_->{err}" }
                       @elsewhen);

my @late = grep { $_->{start} > $kill_at } @ok;
cmp_ok(scalar @late, '>', 10 / $slow,
       scalar(@late) . ' requests succeeded after the kill');

my %by_gen;
$by_gen{$_->{gen}}++ for @ok;
ok($by_gen{1} && $by_gen{2} && $by_gen{3},
   'each generation served: ' . join ', ', map { "$_: $by_gen{$_}" }
                                           sort keys %by_gen);

my @stale = grep { $_->{start} > $reload_at[1] + 2 * $slow && $_->{gen} != 3 }
            @ok;
is(scalar @stale, 0, 'after the second reload only generation 3 answers');

my %workers;
$workers{$_->{worker}}++ for grep { $_->{gen} == 3 } @ok;
diag(sprintf 'load: %d requests, %d failed (%d in flight on the killed '
             . 'worker); generation 3 served by %s',
     scalar @res, scalar @failed, $in_flight,
     join(', ', map { "$_: $workers{$_}" } sort keys %workers));

my @seen = $t->check_logs_except(
    qr/\[alert\] \d+#\d+: worker process $victim exited on signal 9/);
is(scalar @seen, 1, 'the master logged the kill once');


# The client connections (to nginx's port, not listening) among a process's
# descriptors.
sub client_sockets {
    my ($pid) = @_;
    my %conn;
    for my $f ('/proc/net/tcp', '/proc/net/tcp6') {
        open my $fh, '<', $f or next;
        while (<$fh>) {
            my @f = split;
            next unless @f > 9 && $f[1] =~ /:([0-9A-F]{4})$/;
            $conn{$f[9]} = 1 if hex($1) == $t->port && $f[3] ne '0A';
        }
    }
    my $n = 0;
    opendir my $d, "/proc/$pid/fd" or return 0;
    for (readdir $d) {
        my $l = readlink "/proc/$pid/fd/$_" // next;
        $n++ if $l =~ /^socket:\[(\d+)\]$/ && $conn{$1};
    }
    return $n;
}

done_testing;
