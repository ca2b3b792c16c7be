# docs/examples/unico-selfie-alerts.yml: promtool accepts it (check rules),
# its unit tests pass (test rules: each alert fires for the instance that
# misbehaves and for no other), and every metric and reason it uses is one
# the module exports today (read off a live /metrics page).

use strict;
use warnings;

use FindBin;
use lib "$FindBin::Bin/lib";

use Test::More;
use UnicoTest;

my $promtool = (grep { -x } map { "$_/promtool" } split /:/, $ENV{PATH})[0];
plan skip_all => 'promtool not installed (Debian package prometheus; '
                 . './build.sh test installs it)' unless $promtool;

my $t = UnicoTest->new;
my $repo = $t->repo;
my $rules = "$repo/docs/examples/unico-selfie-alerts.yml";
my $tests = "$repo/t/prometheus/unico-selfie-alerts.test.yml";

ok(-f $rules, 'the alert rules exist');

my $out = `$promtool check rules $rules 2>&1`;
is($? >> 8, 0, 'promtool check rules') or diag($out);
like($out, qr/SUCCESS: (\d+) rules found/, 'rules found');
my ($n) = $out =~ /(\d+) rules found/;
ok(($n // 0) >= 6, "at least six alerts ($n)");

$out = `cd $repo/t/prometheus && $promtool test rules $tests 2>&1`;
is($? >> 8, 0, 'promtool test rules') or diag($out);

# every alert of the file has a unit test
my $text = $t->slurp($rules);
my $test = $t->slurp($tests);
my @alerts = $text =~ /^\s*- alert:\s*(\S+)/mg;
for my $a (@alerts) {
    like($test, qr/alertname:\s*\Q$a\E\s*\n\s*exp_alerts:\s*\n\s*- exp_labels/,
         "$a has a test where it fires");
}

# the names against a live page
$t->start_mock;
$t->start_nginx($t->selfie_conf(server => 'location = /metrics { unico_selfie_metrics; }'));
$t->get('/selfies/' . $t->id('jpeg-small'));    # a status is listed once counted
$t->eventually(sub { ($t->metrics('/metrics'))[1] =~ /requests_total\{/ });
my ($m, $page) = $t->metrics('/metrics');
my %names = map { /^(\w+)/ ? ($1 => 1) : () } keys %$m;
my %reasons = map { /reason="(\w+)"/ ? ($1 => 1) : () } keys %$m;
my %results = map { /result="(\w+)"/ ? ($1 => 1) : () } keys %$m;

my $exprs = join "\n", $text =~ /expr:\s*\|\n((?:[ ]{10,}\S.*\n)+)/g;
ok(length $exprs, 'the expressions are found');
my %used = map { $_ => 1 } $exprs =~ /\b(unico_selfie_\w+)/g;
for my $name (sort keys %used) {
    ok($names{$name}, "the module exports $name");
}

my @reasons;
push @reasons, split /\|/, $1 while $exprs =~ /reason=~?"([^"]+)"/g;
ok(@reasons >= 10, 'the rules name reasons');
for my $r (sort { $a cmp $b } keys %{{ map { $_ => 1 } @reasons }}) {
    ok($reasons{$r}, "reason \"$r\" is a failure the module counts");
}
for my $r ($exprs =~ /result="(\w+)"/g) {
    ok($results{$r}, "token result \"$r\" exists");
}

$t->check_logs;

done_testing;
