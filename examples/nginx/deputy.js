// Renders Deputy's denial from the check's own answer: auth_request keeps
// only the status of its subrequest, and asking Deputy again for the body
// would decide (and log) every denial twice. Deputy sends the denial as
// base64url JSON {"status", "headers": [[name, value], ...], "body"} in
// x-deputy-denial, which nginx.conf captures with auth_request_set.
function denied(r) {
    var raw = r.variables.deputy_denial;
    if (!raw) {
        // No answer from Deputy (down, too slow, or not the nginx check):
        // never let the request through, never invent a denial.
        r.return(503, 'authorization unavailable\n');
        return;
    }
    var d;
    try {
        d = JSON.parse(Buffer.from(raw, 'base64url').toString());
    } catch (e) {
        r.error('deputy: unreadable x-deputy-denial: ' + e);
        r.return(503, 'authorization unavailable\n');
        return;
    }
    // Framing is nginx's to set from the body it sends. njs writes a
    // header as given, so a name that is not a token or a value with a
    // control byte (Deputy refuses both) is never written: a CR or LF
    // would start a header line of its own.
    var framing = { 'content-length': 1, 'transfer-encoding': 1, 'connection': 1 };
    var token = /^[!#$%&'*+.^_`|~0-9A-Za-z-]+$/;
    var control = /[\x00-\x08\x0a-\x1f\x7f]/;
    var headers = {};
    d.headers.forEach(function (kv) {
        var name = String(kv[0]).toLowerCase();
        if (!token.test(name) || control.test(String(kv[1]))) {
            r.error('deputy: dropped a denial header that is not a header: ' + JSON.stringify(kv));
            return;
        }
        if (!framing[name]) {
            (headers[name] = headers[name] || []).push(kv[1]);
        }
    });
    Object.keys(headers).forEach(function (name) {
        var v = headers[name];
        r.headersOut[name] = v.length == 1 ? v[0] : v;
    });
    // A denial is never a success, whatever the answer says (Deputy sends
    // only 4xx, 5xx and redirects; anything else is not its answer).
    var redirect = [301, 302, 303, 307, 308].indexOf(d.status) >= 0;
    var status = (redirect || (d.status >= 400 && d.status <= 599)) ? d.status : 403;
    // r.return takes a redirect's text as its Location: a redirect is sent
    // with Deputy's headers and no body.
    if (d.body && !redirect) {
        r.return(status, d.body);
        return;
    }
    // r.return with no text would send nginx's own error page.
    r.status = status;
    r.headersOut['Content-Length'] = 0;
    r.sendHeader();
    r.finish();
}

export default { denied };
