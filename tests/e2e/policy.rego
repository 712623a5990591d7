# Test policy for tests/envoy_e2e.rs (Envoy -> Portcullis -> upstream).
#
# Rego v1 syntax. Portcullis is started with
#   --set=plugins.envoy_ext_authz_grpc.path=envoy/authz/result
# so the decision is the object `result` below (OPA-Envoy's object form):
#
#   GET  /public          allowed
#   *    /api/...         allowed for a known `x-user` (data.e2e.users); the request
#                         reaches the app with `x-authz-user: <user>` added and
#                         `x-secret` removed, and the response gets `x-portcullis: allowed`
#   POST /echo            allowed only if the JSON body has `"ok": true` (input.parsed_body)
#   anything else         denied: 403, body "denied by portcullis e2e policy",
#                         response header `x-portcullis: denied`
package envoy.authz

default result := {
	"allowed": false,
	"http_status": 403,
	"body": "denied by portcullis e2e policy",
	"headers": {"x-portcullis": "denied"},
}

http_request := input.attributes.request.http

result := {"allowed": true} if {
	http_request.method == "GET"
	input.parsed_path == ["public"]
}

result := {
	"allowed": true,
	"headers": {"x-authz-user": user},
	"request_headers_to_remove": ["x-secret"],
	"response_headers_to_add": {"x-portcullis": "allowed"},
} if {
	input.parsed_path[0] == "api"
	user := http_request.headers["x-user"]
	data.e2e.users[user]
}

result := {"allowed": true} if {
	http_request.method == "POST"
	input.parsed_path == ["echo"]
	input.parsed_body.ok == true
}
