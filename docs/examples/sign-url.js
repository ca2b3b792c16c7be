#!/usr/bin/env node
// Signs a selfie URL for ngx_unico_selfie_module (Node.js 16+).
//
//   node sign-url.js KEY_FILE PROCESS_ID [EXPIRES]
//
// KEY_FILE: the first key line (base64 or base64url) is used; EXPIRES: a
// Unix time, default now + 300 s. Prints /selfies/<id>?expires=...&sig=...
'use strict';

const crypto = require('crypto');
const fs = require('fs');

function signSelfieUrl(key, processId, expires) {
    const message = processId.toLowerCase() + '\n' + String(expires);
    const sig = crypto.createHmac('sha256', key).update(message)
        .digest('base64url');
    return `/selfies/${processId}?expires=${expires}&sig=${sig}`;
}

const [keyFile, processId, exp] = process.argv.slice(2);
const line = fs.readFileSync(keyFile, 'utf8').split('\n')
    .map((l) => l.trim()).find((l) => l !== '' && !l.startsWith('#'));
const key = Buffer.from(line, 'base64');   // reads base64url too
const expires = exp || Math.floor(Date.now() / 1000) + 300;

console.log(signSelfieUrl(key, processId, expires));
