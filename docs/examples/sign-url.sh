#!/bin/sh
# Signs a selfie URL for ngx_unico_selfie_module with the openssl CLI.
#
#   sign-url.sh KEY_FILE PROCESS_ID [EXPIRES]
#
# KEY_FILE: the first key line (base64 or base64url) is used; EXPIRES: a
# Unix time, default now + 300 s. Prints /selfies/<id>?expires=...&sig=...
set -eu

key_file=$1 id=$2 expires=${3:-$(($(date +%s) + 300))}

key=$(grep -v '^[[:space:]]*#' "$key_file" | tr -d ' \t\r' | grep -m1 .)

# base64url -> base64 with padding -> hex, for openssl's hexkey
key=$(printf '%s' "$key" | tr -- '-_' '+/')
while [ $((${#key} % 4)) -ne 0 ]; do key="$key="; done
hex=$(printf '%s' "$key" | openssl base64 -d -A | od -An -v -tx1 | tr -d ' \n')

lower=$(printf '%s' "$id" | tr 'A-F' 'a-f')

sig=$(printf '%s\n%s' "$lower" "$expires" \
      | openssl dgst -sha256 -mac HMAC -macopt "hexkey:$hex" -binary \
      | openssl base64 -A | tr -- '+/' '-_' | tr -d '=')

printf '/selfies/%s?expires=%s&sig=%s\n' "$id" "$expires" "$sig"
