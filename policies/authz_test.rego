# Tests for the example policy: `portcullis test policies/` (like `opa test`).
package envoy.authz_test

import rego.v1

import data.envoy.authz

# Tokens signed by the example issuer's key (tests/fixtures/example/), valid until 2100.
reader_token := "eyJhbGciOiJFUzI1NiIsInR5cCI6IkpXVCIsImtpZCI6ImV4YW1wbGUifQ.eyJpc3MiOiJodHRwczovL2lzc3Vlci5leGFtcGxlLmNvbSIsImF1ZCI6Im9yZGVycyIsInN1YiI6ImFsaWNlIiwicm9sZXMiOlsicmVhZGVyIl0sImlhdCI6MTc2NzIyNTYwMCwiZXhwIjo0MTAyNDQ0ODAwfQ.fPlipGMxHr4SsPsATphKqYh2eLl0olX74u_yi8yeF5yMw9Z8mUVhvpg3Orj1deCysyVM2kEiZajuEq6Mv3RdGg"

admin_token := "eyJhbGciOiJFUzI1NiIsInR5cCI6IkpXVCIsImtpZCI6ImV4YW1wbGUifQ.eyJpc3MiOiJodHRwczovL2lzc3Vlci5leGFtcGxlLmNvbSIsImF1ZCI6Im9yZGVycyIsInN1YiI6InJvb3QiLCJyb2xlcyI6WyJhZG1pbiJdLCJpYXQiOjE3NjcyMjU2MDAsImV4cCI6NDEwMjQ0NDgwMH0.wF69wjjiGpeqctIouv5hO5bf35FcDnl58GOiYNHlU6D6HD9pl9P6HuqNo336xN474_OdY74C2dQLDh7lcFJNiQ"

request(method, path, token) := {"attributes": {"request": {"http": {
	"method": method,
	"headers": {"authorization": concat(" ", ["Bearer", token])},
}}}, "parsed_path": path}

test_reader_reads_orders if {
	decision := authz.allow with input as request("GET", ["orders", "42"], reader_token)
	decision.allowed
	decision.headers["x-user"] == "alice"
}

test_reader_cannot_create_orders if {
	decision := authz.allow with input as request("POST", ["orders"], reader_token)
	not decision.allowed
	decision.http_status == 403
}

test_reader_cannot_read_payments if {
	decision := authz.allow with input as request("GET", ["payments"], reader_token)
	decision.http_status == 403
}

test_admin_may_do_anything if {
	decision := authz.allow with input as request("DELETE", ["payments", "7"], admin_token)
	decision.allowed
	decision.headers["x-user"] == "root"
}

test_missing_token_is_challenged if {
	decision := authz.allow with input as {"attributes": {"request": {"http": {"method": "GET", "headers": {}}}}, "parsed_path": ["orders"]}
	decision.http_status == 401
	decision.headers["www-authenticate"]
}

test_forged_signature_is_challenged if {
	parts := split(reader_token, ".")
	forged := concat(".", [parts[0], parts[1], "AAAA"])
	decision := authz.allow with input as request("GET", ["orders"], forged)
	decision.http_status == 401
}

test_health_is_public if {
	decision := authz.allow with input as {"attributes": {"request": {"http": {"method": "GET", "headers": {}}}}, "parsed_path": ["health"]}
	decision.allowed
}
