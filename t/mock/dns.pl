#!/usr/bin/perl
# SPDX-License-Identifier: BSD-2-Clause
#
# dns.pl - a tiny DNS server for the tests (t/191-dns.t): answers A queries
# from a table file that it reads again for every query, so a test changes
# an answer while nginx runs by rewriting the file.
#
#   perl t/mock/dns.pl --listen 127.0.0.1:PORT --table FILE [--log FILE]
#       [--ttl SECONDS]
#
# The table: one "name address" a line.  A name not in it gets NXDOMAIN;
# AAAA and other types get an empty answer (NOERROR).  Each query is
# logged as "name type address" (a line per query).  UDP and TCP, loopback
# only.  Uses Net::DNS::Nameserver (Debian's libnet-dns-perl).

use strict;
use warnings;

use Getopt::Long;
use Net::DNS::Nameserver;

my %o = (ttl => 1);
GetOptions(\%o, 'listen=s', 'table=s', 'log=s', 'ttl=i') or exit 2;
my ($addr, $port) = ($o{listen} // '') =~ /^([\d.]+):(\d+)$/
    or die "dns.pl: --listen ADDR:PORT\n";
die "dns.pl: --table FILE\n" unless $o{table};

sub table {
    my %t;
    open my $fh, '<', $o{table} or return \%t;
    while (<$fh>) {
        my ($name, $ip) = /^\s*(\S+)\s+(\S+)/ or next;
        $t{lc $name} = $ip;
    }
    return \%t;
}

sub reply {
    my ($qname, $qclass, $qtype) = @_;
    my $ip = table()->{lc $qname};
    my $answer = $qtype eq 'A' && $ip ? $ip : '-';

    if ($o{log} && open my $log, '>>', $o{log}) {
        print $log "$qname $qtype $answer\n";
        close $log;
    }

    return ('NXDOMAIN', [], [], [], { aa => 1 }) unless defined $ip;
    return ('NOERROR', [], [], [], { aa => 1 }) unless $qtype eq 'A';
    return ('NOERROR',
            [ Net::DNS::RR->new("$qname $o{ttl} IN A $ip") ],
            [], [], { aa => 1 });
}

my $ns = Net::DNS::Nameserver->new(
    LocalAddr    => $addr,
    LocalPort    => $port,
    ReplyHandler => \&reply,
    Verbose      => 0,
) or die "dns.pl: cannot listen on $addr:$port\n";

# Net::DNS 1.45 and later (Debian 13, unstable) serve from child processes
# (start_server) and have no main_loop; older ones (Debian 12) only
# main_loop.  Either way the table and the log are files, so the children
# see every change.
if ($ns->can('start_server')) {
    my $stop = 0;
    $SIG{TERM} = $SIG{INT} = sub { $stop = 1 };
    $ns->start_server(3600);
    sleep 1 until $stop;
    $ns->stop_server;
    exit 0;
}

$SIG{TERM} = $SIG{INT} = sub { exit 0 };
$ns->main_loop;
