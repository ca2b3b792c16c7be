# docs/directives.md is the reference: every directive of the module's
# command table has a section in nginx.org's form (Syntax, Default,
# Context, Appeared in) whose Context matches the table's flags, and every
# variable of the module is defined under "Embedded Variables".  The C
# source is the truth; a directive or variable added there without a
# reference entry fails here.

use strict;
use warnings;

use FindBin;
use lib "$FindBin::Bin/lib";

use Test::More;
use UnicoTest;

my $repo = $UnicoTest::REPO;
my $c = UnicoTest->slurp("$repo/ngx_unico_selfie_module/ngx_http_unico_selfie_module.c");
my $doc = UnicoTest->slurp("$repo/docs/directives.md");

my ($commands) = $c =~ /ngx_http_unico_selfie_commands\[\]\s*=\s*\{(.*?)ngx_null_command/s;
my ($vars) = $c =~ /ngx_http_unico_selfie_vars\[\]\s*=\s*\{(.*?)ngx_http_null_variable/s;

my @directives;
while (($commands // '') =~ /\{\s*ngx_string\("(\w+)"\),\s*([^,]+),/g) {
    push @directives, [$1, $2];
}
my @variables = ($vars // '') =~ /ngx_string\("(\w+)"\)/g;

ok(@directives >= 13, scalar(@directives) . ' directives in the command table');
ok(@variables >= 7, scalar(@variables) . ' variables in the module');

my %context = (NGX_HTTP_MAIN_CONF => 'http', NGX_HTTP_SRV_CONF => 'server',
               NGX_HTTP_LOC_CONF => 'location');

for my $d (@directives) {
    my ($name, $flags) = @$d;
    my ($sect) = $doc =~ /^### \Q$name\E\n(.*?)(?=^##)/ms;
    ok($sect, "$name has a section") or next;
    like($sect, qr/^\| Syntax: +\| \*\*\Q$name\E\*\*/m, "$name: Syntax");
    like($sect, qr/^\| Default: +\| /m, "$name: Default");
    like($sect, qr/^\| Appeared in: \| \d+\.\d+\.\d+ \|/m, "$name: Appeared in");
    my @want = map { $context{$_} } grep { $flags =~ /\b$_\b/ }
               qw(NGX_HTTP_MAIN_CONF NGX_HTTP_SRV_CONF NGX_HTTP_LOC_CONF);
    my ($ctx) = $sect =~ /^\| Context: +\| (.*?) *\|$/m;
    is(join(', ', ($ctx // '') =~ /`(\w+)`/g), join(', ', @want),
       "$name: Context is that of the command table");
    like($doc, qr/^  \[\Q$name\E\]\(#\Q$name\E\)/m, "$name: in the index");
}

my ($embedded) = $doc =~ /^## Embedded Variables\n(.*?)(?=^## )/ms;
ok($embedded, 'an Embedded Variables section');
for my $v (@variables) {
    like($embedded // '', qr/^`\$\Q$v\E`\n: \S/m, "\$$v is defined");
}

# the guides link to the reference rather than redefine directives
for my $guide (glob "$repo/docs/*.md") {
    next if $guide =~ /directives\.md$/;
    unlike(UnicoTest->slurp($guide), qr/^\| Syntax:/m,
           "$guide: no directive redefined");
}

done_testing;
