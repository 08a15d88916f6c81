"""Does a password match a PostgreSQL SCRAM-SHA-256 verifier? Both come on stdin (password,
newline, verifier), never on the command line. Exit 0: it matches, 1: it does not."""

import base64
import hashlib
import hmac
import re
import sys

password, _, verifier = sys.stdin.read().partition("\n")
match = re.fullmatch(r"SCRAM-SHA-256\$(\d+):([^$]+)\$([^:]+):(\S+)", verifier.strip())
if match is None:
    sys.exit(1)
iterations, salt, stored_key = int(match[1]), base64.b64decode(match[2]), match[3]
salted = hashlib.pbkdf2_hmac("sha256", password.encode(), salt, iterations)
client_key = hmac.new(salted, b"Client Key", "sha256").digest()
computed = base64.b64encode(hashlib.sha256(client_key).digest()).decode()
sys.exit(0 if hmac.compare_digest(computed, stored_key) else 1)
