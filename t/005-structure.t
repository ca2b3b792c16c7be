# The shape of the code (docs/architecture.md): the files of the nginx glue
# call each other as a tree, the handler on top, the stages below, the pure
# core at the bottom, and no two files call into each other; the pure core
# includes nothing of nginx.  Read from the object files of the last build
# (nm), so that the check sees calls, not mentions in comments.

use strict;
use warnings;

use FindBin;
use lib "$FindBin::Bin/lib";

use Test::More;
use UnicoTest;

my $repo = UnicoTest->repo;
my $src = "$repo/ngx_unico_selfie_module";

# --- the pure core includes nothing of nginx ---

for my $file (glob "$src/unico_selfie_*.[ch]") {
    my $text = do { local (@ARGV, $/) = $file; <> };
    my $name = $file =~ s{.*/}{}r;

    # code only: a comment may show how the glue calls the core
    $text =~ s{/\*.*?\*/}{}gs;
    unlike($text, qr/^\s*#\s*include\s*[<"]ngx_/m,
           "$name: no nginx header");
    unlike($text, qr/\bngx_\w+\s*\(/, "$name: no nginx call");
}

# --- the call graph of the glue ---

my ($objs) = grep { -d } ("$repo/.build/nginx/objs/addon/ngx_unico_selfie_module",
                          glob("$repo/.build/*/objs/addon/ngx_unico_selfie_module"));

SKIP: {
    skip 'no object files of a build here (./build.sh makes them)', 3
        unless $objs && glob "$objs/*.o";
    skip 'nm is not installed', 3
        unless grep { -x "$_/nm" } split /:/, $ENV{PATH};

    my (%defined, %undefined);

    for my $o (glob "$objs/*.o") {
        my $unit = $o =~ s{.*/}{}r =~ s/\.o$//r;
        for (`nm $o`) {
            if (/^\S+\s+T\s+(\S+)$/) { $defined{$1} = $unit }
            elsif (/^\s+U\s+(\S+)$/) { $undefined{$unit}{$1} = 1 }
        }
    }

    my %calls;
    for my $unit (keys %undefined) {
        for my $sym (keys %{ $undefined{$unit} }) {
            my $to = $defined{$sym} or next;
            $calls{$unit}{$to} = 1 unless $to eq $unit;
        }
    }

    # a cycle, if there is one: a depth-first search
    my (%state, @path, @cycle);
    my $visit;
    $visit = sub {
        my ($u) = @_;
        $state{$u} = 1;
        push @path, $u;
        for my $v (sort keys %{ $calls{$u} || {} }) {
            if (($state{$v} // 0) == 1) {
                @cycle = (@path[(grep { $path[$_] eq $v } 0 .. $#path)[0] .. $#path], $v)
                    unless @cycle;
            } elsif (!$state{$v}) {
                $visit->($v);
            }
        }
        pop @path;
        $state{$u} = 2;
    };
    $visit->($_) for sort keys %calls;

    ok(!@cycle, 'no two files call into each other (the call graph has no cycle)')
        or diag('cycle: ' . join(' -> ', @cycle));

    my @core_up = grep { /^unico_selfie_/ && %{ $calls{$_} || {} }
                         && grep { /^ngx_/ } keys %{ $calls{$_} } }
                  keys %calls;
    ok(!@core_up, 'the pure core calls nothing of the glue')
        or diag("@core_up");

    my @callers = grep { $calls{$_}{ngx_http_unico_selfie_handler} }
                  keys %calls;
    ok(!grep({ /_(request|signature|cache|coalesce|budget|token|fetch|decode|respond|outcome)$/ }
             @callers),
       'no stage calls the handler') or diag("@callers");
}

done_testing;
