// The njs peer of ngx_unico_selfie_module, for bench/run.sh: GET
// /selfies/<uuid> answered as a competent njs user would write it.  The
// location's regex has already checked that unico_process is a UUID.
//
//     js_import  peer from unico_selfie_peer.js;
//     location ~ "^/selfies/(?<unico_process>[0-9a-fA-F]{8}-...)$" {
//         js_content  peer.selfie;
//     }
//
// r.subrequest() with a callback (or awaited) is an in-memory subrequest:
// the internal location needs subrequest_output_buffer_size >= the JSON.

const TYPES = { 'image/jpeg': true, 'image/png': true };

async function serve(r, api) {
    if (r.method !== 'GET' && r.method !== 'HEAD') {
        r.headersOut['Allow'] = 'GET, HEAD';
        r.return(405);
        return;
    }

    let reply;

    try {
        reply = await r.subrequest(api + '/client/v1/process/'
                                   + r.variables.unico_process + '/selfie');
    } catch (e) {
        r.error('unico subrequest failed: ' + e);
        r.return(502);
        return;
    }

    if (reply.status !== 200) {
        r.return(reply.status === 404 ? 404 : 502);
        return;
    }

    let doc;

    try {
        doc = JSON.parse(reply.responseText);
    } catch (e) {
        r.error('unico answer is not JSON: ' + e);
        r.return(502);
        return;
    }

    if (doc === null || typeof doc.fileContents !== 'string'
        || TYPES[doc.contentType] !== true)
    {
        r.return(502);
        return;
    }

    const image = Buffer.from(doc.fileContents, 'base64');

    if (image.length === 0) {
        r.return(502);
        return;
    }

    r.headersOut['Content-Type'] = doc.contentType;
    r.headersOut['X-Content-Type-Options'] = 'nosniff';
    r.headersOut['Cache-Control'] = 'private, no-store';

    // r.return() sets Content-Length from the body
    r.return(200, image);
}

function selfie(r) {
    return serve(r, '/_api');
}

function selfieSlow(r) {
    return serve(r, '/_api_slow');
}

export default { selfie, selfieSlow };
