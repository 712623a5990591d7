# Basic-auth RBAC written in Rego, as many OPA-Envoy users do: the user from the Basic
# credential, roles from data, permissions matched with glob patterns on method and path.
package envoy.authz

import rego.v1

default allow := false

credential := decoded if {
	[scheme, encoded] := split(input.attributes.request.http.headers.authorization, " ")
	scheme == "Basic"
	decoded := base64.decode(encoded)
}

user := split(credential, ":")[0]

path := split(input.attributes.request.http.path, "?")[0]

allow if {
	some role in data.rbac.bindings[user]
	some grant in data.rbac.roles[role]
	glob.match(grant.method, [], input.attributes.request.http.method)
	glob.match(grant.path, ["/"], path)
}
