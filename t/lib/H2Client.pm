package H2Client;
# SPDX-License-Identifier: BSD-2-Clause

# A minimal HTTP/2 client over cleartext (prior knowledge), enough for the
# tests that must reset a stream: nginx's own tests do the same with
# Test::Nginx::HTTP2.  Headers are sent as HPACK literals without indexing
# and without Huffman coding; the only response header it reads is :status.

use strict;
use warnings;

use Carp qw(croak);
use IO::Select;
use IO::Socket::INET;
use Time::HiRes qw(time);

my %TYPE = (DATA => 0, HEADERS => 1, RST_STREAM => 3, SETTINGS => 4,
            PING => 6, GOAWAY => 7, WINDOW_UPDATE => 8);


sub new {
    my ($class, $port) = @_;

    my $s = IO::Socket::INET->new(PeerAddr => "127.0.0.1:$port",
                                  Timeout => 5)
        or croak "h2 connect: $!";

    my $self = bless { s => $s, buf => '', next => 1, streams => {} },
                     $class;

    $s->syswrite("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n");
    $self->frame('SETTINGS', 0, 0, '');

    return $self;
}


sub frame {
    my ($self, $type, $flags, $sid, $payload) = @_;
    my $len = length $payload;

    $self->{s}->syswrite(pack('CnCCN', $len >> 16, $len & 0xffff,
                              $TYPE{$type}, $flags, $sid) . $payload);
}


sub literal {
    my ($s) = @_;
    croak "header too long" if length $s > 126;
    return chr(length $s) . $s;
}


# Opens a stream with a GET: its id.
sub get {
    my ($self, $path) = @_;
    my $sid = $self->{next};
    $self->{next} += 2;

    my $block = join '', map { "\x00" . literal($_->[0]) . literal($_->[1]) }
                ([':method', 'GET'], [':scheme', 'http'],
                 [':path', $path], [':authority', 'localhost']);

    # END_STREAM | END_HEADERS
    $self->frame('HEADERS', 0x5, $sid, $block);
    $self->{streams}{$sid} = { status => undef, body => '', end => 0 };

    return $sid;
}


# RST_STREAM with CANCEL, as a browser does for an <img> it no longer needs.
sub reset {
    my ($self, $sid) = @_;
    $self->frame('RST_STREAM', 0, $sid, pack('N', 8));
}


# Reads frames for up to $timeout seconds, or until stream $sid ended (or
# received $bytes of DATA): the stream's {status, body, end, reset}.
sub wait_stream {
    my ($self, $sid, $timeout, $bytes) = @_;
    my $deadline = time + ($timeout // 10);
    my $st = $self->{streams}{$sid};
    my $sel = IO::Select->new($self->{s});

    while (!$st->{end} && time < $deadline
           && !(defined $bytes && length $st->{body} >= $bytes))
    {
        if (length $self->{buf} >= 9) {
            my ($hi, $lo, $type, $flags, $id) =
                unpack('CnCCN', substr($self->{buf}, 0, 9));
            my $len = ($hi << 16) | $lo;

            if (length $self->{buf} >= 9 + $len) {
                my $payload = substr($self->{buf}, 9, $len);
                substr($self->{buf}, 0, 9 + $len) = '';
                $self->handle($type, $flags, $id & 0x7fffffff, $payload);
                next;
            }
        }

        last unless $sel->can_read($deadline - time);
        my $n = $self->{s}->sysread(my $chunk, 65536);

        if (!$n) {
            $self->{closed} = 1;
            last;
        }

        $self->{buf} .= $chunk;
    }

    return $st;
}


sub handle {
    my ($self, $type, $flags, $sid, $payload) = @_;

    if ($type == $TYPE{SETTINGS} && !($flags & 1)) {
        $self->frame('SETTINGS', 1, 0, '');
        return;
    }

    if ($type == $TYPE{PING} && !($flags & 1)) {
        $self->frame('PING', 1, 0, $payload);
        return;
    }

    if ($type == $TYPE{GOAWAY}) {
        $self->{goaway} = 1;
        return;
    }

    my $st = $self->{streams}{$sid} or return;

    if ($type == $TYPE{HEADERS}) {
        # nginx sends :status first, as an indexed field (8: 200, 13: 404 ..)
        # or a literal with indexed name 8
        my $b = ord substr($payload, ($flags & 0x8) ? 1 : 0, 1);
        my %indexed = (0x88 => 200, 0x89 => 204, 0x8a => 206, 0x8b => 304,
                       0x8c => 400, 0x8d => 404, 0x8e => 500);
        $st->{status} = $indexed{$b};

        if (!defined $st->{status}) {
            my ($code) = $payload =~ /([1-5]\d\d)/;
            $st->{status} = $code;
        }

    } elsif ($type == $TYPE{DATA}) {
        $st->{body} .= $payload;

    } elsif ($type == $TYPE{RST_STREAM}) {
        $st->{reset} = 1;
        $st->{end} = 1;
    }

    $st->{end} = 1 if $flags & 0x1 && $type != $TYPE{SETTINGS};
}


sub close {
    my ($self) = @_;
    close $self->{s};
}


# How a test listens for cleartext HTTP/2 on this nginx: "http2" on the
# listen line before 1.25.1, the "http2" directive since.
sub listen_directives {
    my ($class, $nginx, $port) = @_;
    my ($v) = `$nginx -v 2>&1` =~ m{nginx/(\d+\.\d+\.\d+)};
    my @v = split /\./, $v // '0.0.0';
    my $new = $v[0] > 1 || $v[1] > 25 || ($v[1] == 25 && $v[2] >= 1);

    return $new ? "listen 127.0.0.1:$port; http2 on;"
                : "listen 127.0.0.1:$port http2;";
}


1;
