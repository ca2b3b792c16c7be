#!/bin/sh
# SPDX-License-Identifier: BSD-2-Clause
#
# gen-certs.sh OUTDIR
#
# Creates the key material the tests and the demo use, with the openssl CLI:
#
#   ca.pem, ca.key                test CA (the gateway's proxy_ssl_trusted_certificate)
#   server.pem, server.key        mock Unico's certificate, signed by the test CA:
#                                 CN=localhost, SAN DNS:localhost, IP:127.0.0.1, IP:::1
#   other-ca.pem, other-ca.key    an unrelated CA
#   untrusted.pem, untrusted.key  same names as server.pem but signed by the other CA
#                                 (for "certificate does not verify" tests)
#   sa.key, sa.pub.pem            service-account RSA-2048 key pair (PKCS#8 PEM,
#                                 unencrypted) and its public key (SubjectPublicKeyInfo)
#   sa.pkcs1.key                  the same private key as PKCS#1 ("RSA PRIVATE KEY")
#   sa-other.key, sa-other.pub.pem  a second service-account key pair: signing with it
#                                 must give "wrong key" (1.2.21)
#
# Idempotent: when every file is present and the certificates still verify, nothing
# is touched (so keys stay stable across runs); otherwise the whole set is made again
# in a scratch directory and moved into place. Quiet on success; on failure prints
# openssl's output and exits non-zero.

set -eu

if [ $# -ne 1 ] || [ -z "$1" ]; then
    echo "usage: $0 OUTDIR" >&2
    exit 2
fi

out=$1
files="ca.pem ca.key server.pem server.key other-ca.pem other-ca.key
       untrusted.pem untrusted.key sa.key sa.pkcs1.key sa.pub.pem
       sa-other.key sa-other.pub.pem"

mkdir -p "$out"

# Everything already there and consistent: done.
complete=1
for f in $files; do
    [ -s "$out/$f" ] || { complete=0; break; }
done
if [ $complete = 1 ] &&
   openssl verify -CAfile "$out/ca.pem" "$out/server.pem" >/dev/null 2>&1 &&
   openssl verify -CAfile "$out/other-ca.pem" "$out/untrusted.pem" >/dev/null 2>&1 &&
   openssl x509 -checkend 86400 -noout -in "$out/server.pem" >/dev/null 2>&1
then
    exit 0
fi

work=$(mktemp -d "$out/.gen-certs.XXXXXX")
log=$work/openssl.log
trap 'rm -rf "$work"' EXIT

fail() {
    echo "gen-certs.sh: $*" >&2
    [ -s "$log" ] && cat "$log" >&2
    exit 1
}

# run CMD...: runs an openssl command with its chatter captured in $log.
run() {
    "$@" >>"$log" 2>&1 || fail "failed: $*"
}

rsa_key() {
    run openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:2048 -out "$1"
}

# ca NAME CN: a self-signed CA certificate NAME.pem with key NAME.key.
ca() {
    rsa_key "$work/$1.key"
    run openssl req -x509 -new -key "$work/$1.key" -sha256 -days 3650 \
        -subj "/O=ngx_unico_selfie_module tests/CN=$2" \
        -addext "basicConstraints=critical,CA:TRUE" \
        -addext "keyUsage=critical,keyCertSign,cRLSign" \
        -addext "subjectKeyIdentifier=hash" \
        -out "$work/$1.pem"
}

# leaf NAME CA: a localhost server certificate NAME.pem signed by CA.
leaf() {
    rsa_key "$work/$1.key"
    cat >"$work/$1.ext" <<'EOF'
basicConstraints = critical, CA:FALSE
keyUsage = critical, digitalSignature, keyEncipherment
extendedKeyUsage = serverAuth
subjectAltName = DNS:localhost, IP:127.0.0.1, IP:0:0:0:0:0:0:0:1
authorityKeyIdentifier = keyid
subjectKeyIdentifier = hash
EOF
    run openssl req -new -key "$work/$1.key" -subj "/CN=localhost" \
        -out "$work/$1.csr"
    run openssl x509 -req -in "$work/$1.csr" -sha256 -days 825 \
        -CA "$work/$2.pem" -CAkey "$work/$2.key" \
        -set_serial "0x$(openssl rand -hex 16)" \
        -extfile "$work/$1.ext" -out "$work/$1.pem"
    rm -f "$work/$1.csr" "$work/$1.ext"
}

ca   ca        "Test CA (mock Unico)"
ca   other-ca  "Other CA (not trusted by the gateway)"
leaf server    ca
leaf untrusted other-ca

rsa_key "$work/sa.key"
run openssl pkey -in "$work/sa.key" -pubout -out "$work/sa.pub.pem"
run openssl pkey -in "$work/sa.key" -traditional -out "$work/sa.pkcs1.key"
rsa_key "$work/sa-other.key"
run openssl pkey -in "$work/sa-other.key" -pubout -out "$work/sa-other.pub.pem"

run openssl verify -CAfile "$work/ca.pem" "$work/server.pem"
run openssl verify -CAfile "$work/other-ca.pem" "$work/untrusted.pem"
if openssl verify -CAfile "$work/ca.pem" "$work/untrusted.pem" >>"$log" 2>&1; then
    fail "untrusted.pem unexpectedly verifies against ca.pem"
fi

chmod 600 "$work"/*.key
chmod 644 "$work"/*.pem
for f in $files; do
    mv -f "$work/$f" "$out/$f" || fail "cannot move $f into $out"
done
