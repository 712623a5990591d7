# The example policy that `portcullis run` serves when given no PATH.
#
# A request passes when it carries a bearer JWT signed by the configured issuer (verified with
# io.jwt.decode_verify) whose roles grant its method on a prefix of its path (role-based access
# from data.authz.roles). The decision is an object, as OPA-Envoy accepts it: allowed requests
# get the caller's subject in `x-user`; a missing or invalid token answers 401 with a
# `www-authenticate` challenge; a valid token without a matching grant answers 403.
package envoy.authz

import rego.v1

http_request := input.attributes.request.http

allow := {"allowed": true} if {
	public
} else := {"allowed": true, "headers": {"x-user": claims.sub}} if {
	permitted
} else := {
	"allowed": false,
	"http_status": 403,
	"headers": {"content-type": "application/json"},
	"body": "{\"error\":\"insufficient_role\"}",
} if {
	claims.sub
} else := {
	"allowed": false,
	"http_status": 401,
	"headers": {
		"content-type": "application/json",
		"www-authenticate": "Bearer realm=\"portcullis\"",
	},
	"body": "{\"error\":\"invalid_token\"}",
}

# Health checks pass without a token.
public if {
	http_request.method == "GET"
	input.parsed_path == ["health"]
}

bearer := token if {
	value := http_request.headers.authorization
	startswith(value, "Bearer ")
	token := substring(value, count("Bearer "), -1)
}

# The token's claims, when its signature, issuer, audience and lifetime check out.
claims := payload if {
	[valid, _, payload] := io.jwt.decode_verify(bearer, {
		"cert": data.authz.jwt.public_key,
		"iss": data.authz.jwt.issuer,
		"aud": data.authz.jwt.audience,
	})
	valid
}

# A role of the caller grants the request's method on a prefix of its path.
permitted if {
	some role in claims.roles
	some grant in data.authz.roles[role]
	grant.method in {http_request.method, "*"}
	array.slice(input.parsed_path, 0, count(grant.path)) == grant.path
}
