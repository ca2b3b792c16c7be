# A short soak: bench/soak/soak.pl (what bench/soak.sh runs for 10 minutes)
# for 45 s.  Good requests, bad input and every faulty Unico behaviour of
# the mock from 6 client processes against one worker: no unexpected
# answer, every failure logged once with its reason, no crash, no leaked
# descriptor, and no RSS growth after the warm-up (not judged under ASan,
# whose quarantine keeps freed memory).  RSS is sampled every second and
# its floor judged (minimum of the last quarter <= minimum of the first
# 10 s * 1.05 + 2 MiB): in 45 s the medians are too few samples and move
# with the PNGs in flight; a leak raises the floor.
#
# The mix includes the 5 MiB image, so two overlapping requests for it
# exercise BUG-1 of docs/reliability.md (fixed in b060fe6) now and then.

use strict;
use warnings;

use FindBin;
use lib "$FindBin::Bin/lib";

use JSON::PP ();
use Test::More;
use UnicoTest;

my $t = UnicoTest->new;                 # for its prefix and sanitized()
my $json = $t->dir . '/soak.json';
my $seconds = $ENV{UNICO_SOAK_SECONDS} || 45;

my @cmd = ($^X, "$FindBin::Bin/../bench/soak/soak.pl",
           '--seconds', $seconds, '--warmup', 10, '--sample', 1,
           '--rss-stat', 'min', '--json', $json, '--quiet');

my $out = `@cmd 2>&1`;
my $rc = $? >> 8;

my $r = eval { JSON::PP->new->decode($t->slurp($json)) };
ok($r, 'the soak ran and wrote its report') or do {
    diag($out);
    done_testing;
    exit;
};

my $slow = $t->sanitized ? 3 : 1;

cmp_ok($r->{requests}, '>', 1000 / $slow,
       "$r->{requests} requests in $r->{duration_s} s, seed $r->{seed}");

is($r->{unexpected}, 0, 'no unexpected answer')
    or diag(explain $r->{unexpected_samples});
is_deeply($r->{reason_mismatch}, [],
          'access and error logs agree with the clients, reason by reason');
is_deeply($r->{bad_log_lines}, [], 'no crash, alert or sanitizer report');
is($r->{worker_respawned}, 0, 'the worker never died');
ok($r->{fds_ok}, 'no descriptor left: '
   . join(' ', map { "$_=$r->{fds_end}{$_}" } sort keys %{ $r->{fds_end} }));

my @missing = grep { !$r->{counts}{$_} }
              grep { /^(ka:)?good:(jpeg|png)|^bad-method:|^unico:status-5
                        |^fault:(reset|close-no-answer|garbage|truncated
                                 |reset-mid-body|chunked-truncated
                                 |untrusted-certificate)$/x }
              sort keys %{ $r->{expected} };
is_deeply(\@missing, [], 'every fixture and the main network faults were '
                         . 'exercised')
    unless $t->sanitized;

my $msg = sprintf 'RSS floor: warm-up %.1f MiB, last quarter %.1f MiB, '
                  . 'limit %.1f MiB', map { ($_ // 0) / 1024 }
                  @$r{qw(rss_warmup_median_kb rss_last_quarter_median_kb
                         rss_limit_kb)};
SKIP: {
    skip "$msg (ASan: not judged)", 1 if $r->{sanitized};
    ok($r->{rss_growth_ok}, "no RSS growth ($msg)")
        or diag(join ' ', map { "$_->{t}s:$_->{rss_kb}" }
                          @{ $r->{rss_samples} });
}

is($rc, 0, 'soak.pl exit status') or diag($out);

done_testing;
