#!/usr/bin/env python3
"""Test servers for tests/integration/registry_test.cc. Prints "listening on PORT"
once bound (port 0: the kernel picks), then serves until killed.

  server.py token KEY.pem CERT.pem   registry token server (JWT RS256, x5c);
                                     grants what is asked; 401 when Basic
                                     credentials are wrong; POST: OAuth2
                                     refresh-token grant for "refresh-secret"
  server.py fake                     misbehaving registry: /v2/err500/* -> 500,
                                     /v2/big/* -> 5 MiB manifest, /v2/locked/* -> 401
"""
import base64, http.server, json, subprocess, sys, time, urllib.parse, uuid

def b64u(b):
    return base64.urlsafe_b64encode(b).rstrip(b"=").decode()

class Token(http.server.BaseHTTPRequestHandler):
    def log_message(self, *a):
        pass

    def do_GET(self):
        u = urllib.parse.urlparse(self.path)
        q = urllib.parse.parse_qs(u.query)
        auth = self.headers.get("Authorization", "")
        if auth.startswith("Basic "):
            user, _, pw = base64.b64decode(auth[6:]).decode().partition(":")
            if (user, pw) != ("tokenuser", "tokenpass"):
                self.send_response(401); self.end_headers(); return
        self.grant(q)

    # OAuth2 refresh-token grant (Docker's identity tokens): POST form.
    def do_POST(self):
        n = int(self.headers.get("Content-Length", "0"))
        q = urllib.parse.parse_qs(self.rfile.read(n).decode())
        if q.get("grant_type") != ["refresh_token"] or q.get("refresh_token") != ["refresh-secret"]:
            self.send_response(401); self.send_header("Content-Length", "0"); self.end_headers(); return
        self.grant(q)

    def grant(self, q):
        access = []
        for s in q.get("scope", []):
            typ, name, actions = s.split(":")
            access.append({"type": typ, "name": name, "actions": actions.split(",")})
        der = subprocess.run(["openssl", "x509", "-in", CERT, "-outform", "DER"], capture_output=True, check=True).stdout
        hdr = {"alg": "RS256", "typ": "JWT", "x5c": [base64.b64encode(der).decode()]}
        now = int(time.time())
        claims = {"iss": "test-issuer", "sub": "tester", "aud": q.get("service", [""])[0], "exp": now + 600,
                  "nbf": now - 10, "iat": now, "jti": str(uuid.uuid4()), "access": access}
        signing = (b64u(json.dumps(hdr).encode()) + "." + b64u(json.dumps(claims).encode())).encode()
        sig = subprocess.run(["openssl", "dgst", "-sha256", "-sign", KEY], input=signing, capture_output=True,
                             check=True).stdout
        tok = signing.decode() + "." + b64u(sig)
        body = json.dumps({"token": tok, "access_token": tok, "expires_in": 600}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

class Fake(http.server.BaseHTTPRequestHandler):
    def log_message(self, *a):
        pass

    def reply(self, code, body=b"", headers=()):
        self.send_response(code)
        for k, v in headers:
            self.send_header(k, v)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self):
        p = self.path
        if p == "/v2/":
            self.reply(200, b"{}")
        elif p.startswith("/v2/err500/"):
            self.reply(500, b'{"errors":[{"code":"UNKNOWN","message":"boom"}]}')
        elif p.startswith("/v2/locked/"):
            self.reply(401, b'{"errors":[{"code":"UNAUTHORIZED","message":"authentication required"}]}',
                       [("WWW-Authenticate", 'Basic realm="fake"')])
        elif p.startswith("/v2/big/") and "/manifests/" in p:
            body = b'{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","x":"' + \
                   b"a" * (5 << 20) + b'"}'
            self.reply(200, body, [("Content-Type", "application/vnd.oci.image.manifest.v1+json")])
        else:
            self.reply(404, b'{"errors":[{"code":"NAME_UNKNOWN","message":"repository name not known to registry"}]}')

mode = sys.argv[1]
if mode == "token":
    KEY, CERT = sys.argv[2], sys.argv[3]
srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Token if mode == "token" else Fake)
print("listening on", srv.server_address[1], flush=True)
srv.serve_forever()
