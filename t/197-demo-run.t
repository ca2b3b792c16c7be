# "./build.sh run" as a person uses it: the demo is announced only once
# nginx and the Unico emulator both answer (the first selfie after the
# announcement is an image, not a 502), and Ctrl-C stops both quietly
# (no "unbound variable" from the exit handler).

use strict;
use warnings;

use FindBin;
use lib "$FindBin::Bin/lib";

use IO::Socket::INET;
use POSIX qw(WNOHANG);
use Test::More;
use Time::HiRes qw(sleep time);
use UnicoTest;

plan skip_all => 'the demo runs Debian\'s nginx, not the sanitizer build'
    if $ENV{TEST_NGINX_SANITIZED};

my $t = UnicoTest->new;
my $repo = $t->repo;
my $port = UnicoTest::free_port();
my $mock = UnicoTest::free_port();
my $err = $t->dir . '/build-run.err';


my @groups;

# build.sh run on free ports; returns its pid once it announced the demo
sub start_demo {
    my ($err) = @_;
    my $pid = fork // die "fork: $!";
    if ($pid == 0) {
        setpgrp(0, 0);
        open STDIN, '<', '/dev/null';
        open STDOUT, '>', $t->dir . '/build-run.out';
        open STDERR, '>', $err;
        $ENV{UNICO_DEMO_PORT} = $port;
        $ENV{UNICO_DEMO_MOCK_PORT} = $mock;
        exec 'bash', "$repo/build.sh", 'run' or die "exec: $!";
    }
    push @groups, $pid;

    my $deadline = time + 120;
    while (time < $deadline) {
        return $pid if $t->slurp($err) =~ /demo on http:/;
        last if waitpid($pid, WNOHANG) == $pid;
        sleep 0.02;
    }
    return $pid;
}

sub ended {
    my ($pid, $what) = @_;
    my $end = time + 20;
    while (time < $end) {
        return 1 if waitpid($pid, WNOHANG) == $pid;
        sleep 0.05;
    }
    kill 'KILL', -$pid;
    return 0;
}

sub nothing_listens {
    my ($what) = @_;
    sleep 0.5;
    for my $p ($port, $mock) {
        ok(!IO::Socket::INET->new(PeerAddr => "127.0.0.1:$p", Timeout => 1),
           "$what: nothing listens on $p any more");
    }
}

# whatever a failing run left behind (its own process group)
END { kill 'KILL', -$_ for @groups }

my $pid = start_demo($err);
like($t->slurp($err), qr/demo on http:/, 'build.sh run announces the demo')
    or diag($t->slurp($err));

# at once, as a person who reads the line and opens the page
my @ids = qw(53060f52-f146-4c12-a234-5bb5031f6f5b
             de50b727-3c28-1c95-8d2b-242124c3d443
             0193b2f4-7c1e-7a3d-9f20-5e6b8c41d7a9
             bf6260fe-c332-46b4-a37a-45aa3b53965d);
for my $id (@ids) {
    my $r = $t->get("/selfies/$id", port => $port);
    is($r->{status}, 200, "right after the announcement: $id is 200");
    like($r->{headers}{'content-type'} // '', qr{^image/}, '... an image');
}

# Ctrl-C: SIGINT to the whole foreground process group
kill 'INT', -$pid;
ok(ended($pid), 'Ctrl-C ends build.sh run');
my $stderr = $t->slurp($err);
unlike($stderr, qr/unbound variable/, 'no "unbound variable" on Ctrl-C');
like($stderr, qr/demo stopped/, 'the demo says it stopped') or diag($stderr);
nothing_listens('after Ctrl-C');

# nginx ends by itself (here: TERM to its master): build.sh stops the
# emulator too and says so, although nginx is already gone when its exit
# handler runs
my $err2 = $t->dir . '/build-run-2.err';
$pid = start_demo($err2);
# the demo's prefix as build.sh announces it (.build/demo, or
# .build/nginx-<line>/demo for UNICO_NGINX=<line>)
my ($logs) = $t->slurp($err2) =~ /logs in (\S+)/;
my ($master) = $t->slurp(($logs // "$repo/.build/demo/logs") . '/nginx.pid')
               =~ /(\d+)/;
ok($master && kill('TERM', $master), 'nginx is stopped from outside');
ok(ended($pid), 'build.sh run ends with it');
$stderr = $t->slurp($err2);
like($stderr, qr/demo stopped/, 'the demo says it stopped') or diag($stderr);
unlike($stderr, qr/unbound variable/, 'no "unbound variable"');
nothing_listens('after nginx ended');

done_testing;
