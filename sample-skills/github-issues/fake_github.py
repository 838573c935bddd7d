#!/usr/bin/env python3
"""A stand-in for the GitHub API on loopback, for trying github-issues locally.

Answers GET /repos/OWNER/REPO/issues with two issues, but only when the
request carries `Authorization: Bearer $TOKEN`; anything else gets 401.
With --echo it instead returns every request header as an issue title, to
show that skillbox keeps the token out of what the skill sees.

    TOKEN=... python3 sample-skills/github-issues/fake_github.py --port 8719 [--echo]
"""
import argparse
import json
import os
from http.server import BaseHTTPRequestHandler, HTTPServer


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, default=8719)
    parser.add_argument("--echo", action="store_true", help="echo request headers back in the body")
    args = parser.parse_args()
    token = os.environ.get("TOKEN", "")
    if not token:
        raise SystemExit("set TOKEN to the token the server should accept")

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self):
            if args.echo:
                issues = [{"number": i + 1, "title": f"{k}: {v}"} for i, (k, v) in enumerate(self.headers.items())]
                return self.reply(200, issues)
            if self.headers.get("Authorization") != f"Bearer {token}":
                return self.reply(401, {"message": "Bad credentials"})
            if self.path.endswith("/issues"):
                return self.reply(200, [{"number": 1, "title": "Served by fake_github.py"}, {"number": 2, "title": "Second"}])
            return self.reply(404, {"message": "Not Found"})

        def reply(self, status, body):
            data = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

    HTTPServer(("127.0.0.1", args.port), Handler).serve_forever()


if __name__ == "__main__":
    main()
