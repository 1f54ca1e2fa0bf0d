#!/usr/bin/env python3
"""A signed create -> pay -> PAID walk-through against a running paycore (standard library only).

Usage: python3 scripts/walkthrough.py [base_url] [merchant] [secret]
Defaults match config.toml's demo merchant: http://127.0.0.1:8080 demo demo-secret-change-me
"""
import hashlib, hmac, json, secrets, sys, time, urllib.error, urllib.request

BASE = sys.argv[1] if len(sys.argv) > 1 else "http://127.0.0.1:8080"
MERCHANT = sys.argv[2] if len(sys.argv) > 2 else "demo"
SECRET = (sys.argv[3] if len(sys.argv) > 3 else "demo-secret-change-me").encode()


def call(method, path, body=None):
    """Signs and sends one request: HMAC-SHA256 over METHOD, PATH_AND_QUERY, TIMESTAMP, NONCE, BODY."""
    raw = b"" if body is None else json.dumps(body).encode()
    ts, nonce = str(int(time.time())), secrets.token_hex(16)
    msg = b"\n".join([method.encode(), path.encode(), ts.encode(), nonce.encode()]) + b"\n" + raw
    headers = {
        "Content-Type": "application/json",
        "X-Paycore-Merchant": MERCHANT,
        "X-Paycore-Timestamp": ts,
        "X-Paycore-Nonce": nonce,
        "X-Paycore-Signature": hmac.new(SECRET, msg, hashlib.sha256).hexdigest(),
    }
    req = urllib.request.Request(BASE + path, data=raw if body is not None else None, method=method, headers=headers)
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read() or b"{}")


status, token = call("POST", "/v1/submit-tokens", {})
print("token  ", status, token)
order_no = "WALK-" + secrets.token_hex(6)
status, order = call("POST", "/v1/orders", {
    "submit_token": token["token"], "merchant_order_no": order_no, "amount": 12345,
    "business_type": "BillBuy", "channel": "sim", "subject": "Gas bill",
})
print("create ", status, order["order_id"], order["status"])
status, pay = call("POST", f"/v1/orders/{order['order_id']}/pay", {"pay_method": "native"})
print("pay    ", status, pay)
deadline = time.time() + 10
while time.time() < deadline:
    status, current = call("GET", f"/v1/orders/{order['order_id']}")
    if current["status"] != "PAYING":
        break
    time.sleep(0.2)
print("read   ", status, current["status"], "version", current["version"], "paid_at", current["paid_at"])
status, found = call("GET", f"/v1/orders?merchant_order_no={order_no}")
print("lookup ", status, found["order_id"] == order["order_id"])
sys.exit(0 if current["status"] == "PAID" else 1)
