# The network between the gateway and Unico: nothing listening, a
# certificate that does not verify, a peer that does not speak TLS.

use strict;
use warnings;

use FindBin;
use lib "$FindBin::Bin/lib";

use IO::Socket::INET;
use Test::More;
use UnicoTest;

# nothing listening: connection refused
{
    my $t = UnicoTest->new;
    $t->certs;
    my $conf = $t->selfie_conf;
    my $closed = UnicoTest::free_port();
    $conf =~ s/%%MOCK%%/127.0.0.1:$closed/;
    $t->start_nginx($conf);

    my $r = $t->get('/selfies/53060f52-f146-4c12-a234-5bb5031f6f5b');
    is($r->{status}, 502, 'connection refused: 502');
    like($t->error_log, qr/\[error\].*reason: upstream_error/,
         'connection refused: logged as upstream_error');
    $t->check_logs;
}

# a certificate from another CA: proxy_ssl_verify refuses it
{
    my $t = UnicoTest->new;
    $t->start_mock(cert => 'untrusted');
    $t->start_nginx($t->selfie_conf);

    my $r = $t->get('/selfies/' . $t->id('jpeg-small'));
    is($r->{status}, 502, 'untrusted certificate: 502');
    like($t->error_log, qr/upstream SSL certificate verify error/,
         'untrusted certificate: nginx says why');
    like($t->error_log, qr/\[error\].*reason: upstream_error/,
         'untrusted certificate: logged as upstream_error');
    is($t->selfie_calls, 0, 'untrusted certificate: no request was sent');
    $t->check_logs;
}

# a peer that accepts TCP and answers plain HTTP to the TLS handshake
{
    my $t = UnicoTest->new;
    $t->certs;
    my $plain = IO::Socket::INET->new(Listen => 8, LocalAddr => '127.0.0.1',
                                      LocalPort => 0, ReuseAddr => 1)
        or die $!;
    my $port = $plain->sockport;

    my $pid = fork // die;
    if ($pid == 0) {
        while (my $c = $plain->accept) {
            $c->syswrite("HTTP/1.1 400 Bad Request\r\n\r\n");
            close $c;
        }
        exit 0;
    }
    close $plain;

    my $conf = $t->selfie_conf;
    $conf =~ s/%%MOCK%%/127.0.0.1:$port/;
    $t->start_nginx($conf);

    my $r = $t->get('/selfies/53060f52-f146-4c12-a234-5bb5031f6f5b');
    is($r->{status}, 502, 'TLS handshake failure: 502');
    like($t->error_log, qr/\[error\].*reason: upstream_error/,
         'TLS handshake failure: logged as upstream_error');

    kill 'KILL', $pid;
    waitpid($pid, 0);
    $t->check_logs;
}

done_testing;
