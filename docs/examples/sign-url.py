#!/usr/bin/env python3
"""Signs a selfie URL for ngx_unico_selfie_module.

    python3 sign-url.py KEY_FILE PROCESS_ID [EXPIRES]

KEY_FILE: the first key line (base64 or base64url) is used; EXPIRES: a
Unix time, default now + 300 s. Prints /selfies/<id>?expires=...&sig=...
"""

import base64
import hashlib
import hmac
import sys
import time


def sign_selfie_url(key: bytes, process_id: str, expires: int) -> str:
    message = f"{process_id.lower()}\n{expires}".encode()
    mac = hmac.new(key, message, hashlib.sha256).digest()
    sig = base64.urlsafe_b64encode(mac).rstrip(b"=").decode()
    return f"/selfies/{process_id}?expires={expires}&sig={sig}"


def read_key(path: str) -> bytes:
    with open(path) as f:
        for line in f:
            line = line.strip()
            if line and not line.startswith("#"):
                line = line.replace("+", "-").replace("/", "_").rstrip("=")
                return base64.urlsafe_b64decode(line + "=" * (-len(line) % 4))
    raise SystemExit(f"{path}: no key")


if __name__ == "__main__":
    key_file, process_id = sys.argv[1], sys.argv[2]
    expires = sys.argv[3] if len(sys.argv) > 3 else int(time.time()) + 300
    print(sign_selfie_url(read_key(key_file), process_id, expires))
